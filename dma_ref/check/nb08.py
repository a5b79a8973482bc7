"""Checkers for notebook 08 (performance): the work of causal attention and DMA's crossover."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import flops
from .core import Result, exercise, forbid, generator, resolve_seed, run_checks


def _random_cases(n: int, lo: int, hi: int, g: torch.Generator) -> list[int]:
    return torch.randint(lo, hi + 1, (n,), generator=g).tolist()


def _no_flops_module():
    """While the learner's function runs, the package's counts are off: the exercise is to
    derive them."""
    names = ("causal_pairs", "dma_kept_pairs", "dma_union_keys", "dma_work_pairs",
             "attention_flops", "config_floors", "work_ratio", "crossover_n")
    return forbid("derive it yourself: the package's dma_ref.flops counts are switched off "
                  "while your function runs", *[(flops, name) for name in names])


def _expect_whole(got: object) -> None:
    """Assert that the learner returned a whole number (an int, or a float without fraction)."""
    assert isinstance(got, int) or float(got).is_integer(), f"return a whole number, got {got!r}"


@exercise(points=1)
def check_causal_flops(fn: Callable[[int, int, int], int], strict: bool = False, *,
                       seed: int | None = None) -> Result:
    """``fn(N, D, H) -> int``: forward matrix FLOPs of causal attention (Q = K = N, one batch).

    Every kept pair (j <= p) costs two length-D dot products, ``q·k`` and ``p·v``: 4·D FLOPs,
    per head; a causal head keeps ``N (N + 1) / 2`` pairs.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        cases = [(1, 1, 1), (2, 1, 1), (4, 8, 1), (4096, 128, 8), (1000, 64, 3)]
        cases += list(zip(_random_cases(4, 1, 50000, g), _random_cases(4, 1, 256, g),
                          _random_cases(4, 1, 32, g)))
        for N, D, H in cases:
            with _no_flops_module():
                got = fn(N, D, H)
            want = flops.attention_flops(flops.causal_pairs(N), D, H)
            _expect_whole(got)
            if int(got) != want:
                hint = ""
                if int(got) == 4 * D * H * N * N // 2:
                    hint = " (N^2/2 misses the diagonal: row p keeps p + 1 keys)"
                elif int(got) == 4 * D * H * N * N:
                    hint = " (that is the non-causal count)"
                elif int(got) == want // 2:
                    hint = " (each pair needs two dot products: q.k and p.v)"
                raise AssertionError(f"N={N}, D={D}, H={H}: expected {want}, got {got}{hint}")
    return run_checks("FLOPs of causal attention", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_crossover(fn: Callable[[int, int], int], strict: bool = False, *,
                    seed: int | None = None) -> Result:
    """``fn(w, BM) -> int``: the smallest N with ``N·(w + BM) <= N (N + 1) / 4``, i.e. the first
    length at which DMA's modelled work is at most half of dense causal attention's."""
    def brute(w: int, BM: int) -> int:
        N = 1
        while 4 * N * (w + BM) > N * (N + 1):
            N += 1
        return N

    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        cases = [(1, 1), (1024, 128), (256, 64), (4096, 128)]
        cases += list(zip(_random_cases(3, 1, 3000, g), _random_cases(3, 1, 256, g)))
        for w, BM in cases:
            with _no_flops_module():
                got = fn(w, BM)
            want = brute(w, BM)
            assert want == flops.crossover_n(w, BM)
            _expect_whole(got)
            if int(got) != want:
                raise AssertionError(f"w={w}, BM={BM}: the smallest such N is {want}, got {got} "
                                     f"(at N={int(got)}: DMA work {int(got) * (w + BM)}, half of "
                                     f"dense {int(got) * (int(got) + 1) / 4:.0f})")
    return run_checks("DMA's crossover length", trials, strict=strict, seed=seed)
