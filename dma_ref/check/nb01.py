"""Checkers for notebook 01 (dense attention): stable softmax, bottom-right causal mask, GQA."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..dense import causal_mask, dense_attention
from .core import (
    Result,
    context,
    exercise,
    expect_tensor,
    forbid,
    generator,
    resolve_seed,
    run_checks,
)


def _softmax_forbidden():
    """Make the library softmaxes raise while the learner's function runs: build it yourself."""
    return forbid("build the softmax from exp, max and sum; do not call a library softmax",
                  (torch, "softmax"), (F, "softmax"), (torch.Tensor, "softmax"),
                  (torch.special, "softmax"), (torch, "log_softmax"), (F, "log_softmax"),
                  (torch.Tensor, "log_softmax"), (torch.special, "log_softmax"))


@exercise(points=1)
def check_stable_softmax(fn: Callable[[torch.Tensor], torch.Tensor], strict: bool = False, *,
                         seed: int | None = None) -> Result:
    """``fn(x) -> softmax of x over its last dim``, same shape and dtype, stable for huge logits.

    Inputs include logits of size 1e4 (naive ``exp`` overflows to inf, giving NaN) and ``-inf``
    entries (masked keys; every row keeps at least one finite entry).
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        xs = [torch.randn(3, 7, generator=g),
              torch.randn(2, 4, 5, generator=g) * 30,
              torch.randn(4, 9, generator=g) * 1e4,
              torch.randn(5, 3, generator=g, dtype=torch.float64) * 1000 + 5000,
              torch.randn(1, 1, generator=g)]
        masked = torch.randn(6, 8, generator=g) * 100
        masked[torch.rand(6, 8, generator=g) < 0.5] = float("-inf")
        masked[:, 0] = 50.0                                     # one finite entry per row
        xs.append(masked)
        for x in xs:
            with _softmax_forbidden():
                got = fn(x.clone())
            want = torch.softmax(x, dim=-1)
            expect_tensor(got)
            magnitude = x[torch.isfinite(x)].abs().max().item()
            assert torch.isfinite(got).all(), (f"non-finite output for inputs of magnitude "
                                               f"{magnitude:.3g} (seed {seed}): "
                                               "subtract the row max before exp")
            where = f"softmax of shape {tuple(x.shape)} (seed {seed})"
            torch.testing.assert_close(got, want, msg=context(where))
    return run_checks("stable softmax", trials, strict=strict, seed=seed)


@exercise(points=1)
def check_causal_mask(fn: Callable[[int, int], torch.Tensor], strict: bool = False, *,
                      seed: int | None = None) -> Result:
    """``fn(Q, K) -> bool [Q, K]``, True where query row i (position ``K - Q + i``) may see key
    j."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        cases = [(4, 4), (1, 6), (3, 8), (1, 1)]
        for _ in range(4):
            K = int(torch.randint(1, 30, (), generator=g))
            cases.append((int(torch.randint(1, K + 1, (), generator=g)), K))
        for Q, K in cases:
            got = fn(Q, K)
            expect_tensor(got, dtype=torch.bool, shape=(Q, K), where=f"Q={Q}, K={K}")
            want = causal_mask(Q, K)
            bad = (got != want).nonzero()
            assert bad.numel() == 0, (f"Q={Q}, K={K}: wrong at (i, j) = {tuple(bad[0].tolist())}; "
                                      "row i sits at position K - Q + i (bottom-right alignment)")
    return run_checks("causal mask for Q <= K", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_gqa_attention(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                        strict: bool = False, *, seed: int | None = None) -> Result:
    """``fn(q, k, v) -> o``: non-causal softmax attention with GQA, scale ``D**-0.5``.

    q ``[B, Hq, Q, D]``, k and v ``[B, Hkv, K, D]``, Hq = G * Hkv; query head h reads KV head
    ``h // G``. Returns o ``[B, Hq, Q, D]``.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for B, Hq, Hkv, Q, K, D in [(1, 1, 1, 3, 5, 4), (2, 4, 2, 5, 7, 8), (1, 6, 2, 4, 4, 16),
                                    (1, 4, 1, 2, 9, 8), (1, 8, 4, 6, 3, 4)]:
            q = torch.randn(B, Hq, Q, D, generator=g, dtype=torch.float64)
            k = torch.randn(B, Hkv, K, D, generator=g, dtype=torch.float64)
            v = torch.randn(B, Hkv, K, D, generator=g, dtype=torch.float64)
            got = fn(q.clone(), k.clone(), v.clone())
            want = dense_attention(q, k, v)
            where = f"B={B}, Hq={Hq}, Hkv={Hkv}, Q={Q}, K={K}, D={D} (seed {seed})"
            torch.testing.assert_close(got, want, msg=context(where))
    return run_checks("GQA attention", trials, strict=strict, seed=seed)
