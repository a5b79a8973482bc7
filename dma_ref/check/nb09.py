"""Checkers for notebook 09 (training on MQAR): the accuracy at query positions, and how far
back a sliding-window model can see."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from ..lab.tasks import IGNORE
from ..mask import sliding_window_mask
from .core import Result, exercise, forbid, generator, resolve_seed, run_checks


@exercise(points=1)
def check_query_accuracy(fn: Callable[[torch.Tensor, torch.Tensor], float],
                         strict: bool = False, *,
                         seed: int | None = None) -> Result:
    """``fn(logits [B, N, V], targets int64 [B, N]) -> float``: the fraction of positions with
    ``targets != -100`` whose argmax prediction equals the target (other positions ignored)."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for B, N, V, p_query in [(2, 10, 7, 0.3), (4, 33, 16, 0.1), (1, 5, 3, 1.0),
                                 (3, 20, 50, 0.5)]:
            logits = torch.randn(B, N, V, generator=g)
            targets = torch.randint(0, V, (B, N), generator=g)
            # Make about half of the scored positions right, so that a wrong answer shows.
            right = torch.rand(B, N, generator=g) < 0.5
            targets = torch.where(right, logits.argmax(-1), targets)
            scored = torch.rand(B, N, generator=g) < p_query
            scored[0, 0] = True
            targets = torch.where(scored, targets, torch.full_like(targets, IGNORE))
            want = (logits.argmax(-1)[scored] == targets[scored]).float().mean().item()
            got = fn(logits.clone(), targets.clone())
            got = float(got.item() if isinstance(got, torch.Tensor) else got)
            assert abs(got - want) < 1e-6, (
                f"B={B}, N={N}, V={V}, {int(scored.sum())} scored positions (seed {seed}): "
                f"expected {want:.4f}, got {got:.4f}")
    return run_checks("accuracy at query positions", trials, strict=strict, seed=seed)


def reachable_from(N: int, window: int, n_layers: int, p: int, conv_kernel: int = 0) -> torch.Tensor:
    """bool ``[N]``: the tokens whose information can reach position p after ``n_layers``
    sliding-window attention layers (a walk through the band mask, computed, not by formula),
    each layer preceded by a causal convolution of ``conv_kernel`` taps (0: none), which mixes
    position t with ``t - conv_kernel + 1 .. t``."""
    keep = sliding_window_mask(N, window)
    reach = torch.zeros(N, dtype=torch.bool)
    reach[p] = True
    for _ in range(n_layers):
        reach = reach | keep[reach].any(0)
        spread = reach.clone()
        for shift in range(1, conv_kernel):
            spread[:-shift] |= reach[shift:]
        reach = spread
    return reach


@exercise(points=2)
def check_first_blind_query(fn: Callable[[int, int, int], int], strict: bool = False, *,
                            seed: int | None = None) -> Result:
    """``fn(num_pairs, window, n_layers) -> int``: the smallest position p such that a model of
    ``n_layers`` sliding-window layers (window w, query p keeps keys ``p - w < j <= p``) cannot
    move any information from the pairs (positions ``0 .. 2P - 1``) to position p."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        cases = [(4, 8, 2), (1, 1, 3), (8, 16, 2), (3, 5, 1)]
        cases += [tuple(int(torch.randint(lo, hi, (1,), generator=g))
                        for lo, hi in ((1, 9), (1, 12), (1, 5))) for _ in range(4)]
        for P, w, L in cases:
            N = 2 * P + L * w + 4
            blind = [p for p in range(N) if not reachable_from(N, w, L, p)[:2 * P].any()]
            want = blind[0]
            with forbid("write it yourself: the exercise is the formula, not a search with "
                        "reachable_from", (sys.modules[__name__], "reachable_from")):
                got = fn(P, w, L)
            assert int(got) == want, (f"num_pairs={P}, window={w}, n_layers={L} (seed {seed}): "
                                      f"expected {want}, got {got}")
    return run_checks("first query a sliding window cannot answer", trials, strict=strict,
                      seed=seed)
