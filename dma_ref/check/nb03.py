"""Checkers for notebook 03 (naive DMA): DMA from dense pieces, keys that get no gradient, and
the score gradient summed over a query-head group."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import naive as naive_mod
from ..mask import dma_mask
from ..naive import naive_dma_attention
from .core import (
    Result,
    context,
    exercise,
    expect_tensor,
    forbid_package,
    generator,
    resolve_seed,
    run_checks,
)

CONFIGS = [  # (B, Hq, Hkv, Q, K, D, window, mode)
    (1, 1, 1, 8, 8, 4, 3, "row"),
    (2, 4, 2, 12, 12, 8, 4, "row"),
    (1, 2, 1, 5, 13, 8, 6, "row"),       # Q < K: bottom-right aligned rows
    (1, 4, 2, 16, 16, 4, 3, "global"),   # global mode: early rows can be empty
    (1, 3, 1, 10, 10, 8, 20, "row"),     # w >= K: plain causal attention plus the bias
    (1, 2, 2, 6, 6, 4, 2, "global"),
]


@exercise(points=2)
def check_naive_dma(fn: Callable[..., torch.Tensor], strict: bool = False, *,
                    seed: int | None = None) -> Result:
    """``fn(q, k, v, s, window, mode) -> o``: causal DMA, scale ``D**-0.5``; GQA; Q <= K;
    empty rows (global mode) must give 0, not NaN."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for B, Hq, Hkv, Q, K, D, w, mode in CONFIGS:
            q = torch.randn(B, Hq, Q, D, generator=g, dtype=torch.float64)
            k = torch.randn(B, Hkv, K, D, generator=g, dtype=torch.float64)
            v = torch.randn(B, Hkv, K, D, generator=g, dtype=torch.float64)
            s = torch.randn(B, Hkv, K, generator=g, dtype=torch.float64)
            if mode == "global":   # key 0 outside the top w: row 0 is empty on every trial
                s[..., 0] = s.min() - 1.0
            with forbid_package("naive_dma_attention", naive_mod,
                                "build it from dense pieces (dma_ref.dma_mask, matmuls, softmax); "
                                "do not call naive_dma_attention"):
                got = fn(q.clone(), k.clone(), v.clone(), s.clone(), w, mode)
            want = naive_dma_attention(q, k, v, s, w, mode=mode)
            expect_tensor(got)
            assert not torch.isnan(got).any(), (f"NaN in the output ({mode} mode, w={w}): "
                                                "an empty row must give 0")
            where = (f"B={B}, Hq={Hq}, Hkv={Hkv}, Q={Q}, K={K}, D={D}, window={w}, mode={mode} "
                     f"(seed {seed})")
            torch.testing.assert_close(got, want, msg=context(where))
    return run_checks("naive DMA from dense pieces", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_dead_keys(fn: Callable[[torch.Tensor, int, str], torch.Tensor], strict: bool = False, *,
                    seed: int | None = None) -> Result:
    """``fn(s, window, mode) -> bool [B, Hkv, K]``: True for keys whose dk and dv rows are exactly
    zero after a causal DMA forward and backward (Q = K), whatever q, k, v and the loss."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for B, Hkv, K, w in [(1, 1, 10, 3), (2, 2, 16, 4), (1, 1, 7, 7), (1, 3, 20, 2)]:
            for mode in ("row", "global"):
                s = torch.randn(B, Hkv, K, generator=g)
                if K > 9:
                    s[..., :4] = s[..., 4:8]         # ties between early and later keys
                got = fn(s.clone(), w, mode)
                want = ~dma_mask(s, w, mode=mode).any(-2)
                expect_tensor(got, dtype=torch.bool, shape=tuple(want.shape))
                bad = (got != want).nonzero()
                if bad.numel():
                    b, h, j = bad[0].tolist()
                    verdict = ("gets no gradient" if want[b, h, j]
                               else "is kept by some query, so it gets a gradient")
                    raise AssertionError(
                        f"{mode} mode, window={w}, K={K} (seed {seed}): key {j} {verdict}")
    return run_checks("keys with no gradient", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_score_grad(fn: Callable[[torch.Tensor, int], torch.Tensor], strict: bool = False, *,
                     seed: int | None = None) -> Result:
    """``fn(dlogits, Hkv) -> ds``: dlogits ``[B, Hq, Q, K]`` is the gradient of the loss with
    respect to the logits (zero where a key was not kept); the bias ``s_j`` of KV head h enters
    every logit of column j of the G query heads ``h*G .. h*G + G - 1``. Returns ds
    ``[B, Hkv, K]``."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for B, Hq, Hkv, Q, K in [(1, 1, 1, 4, 6), (2, 4, 2, 5, 5), (1, 6, 3, 3, 7),
                                 (1, 4, 1, 2, 8)]:
            dlogits = torch.randn(B, Hq, Q, K, generator=g, dtype=torch.float64)
            dlogits[torch.rand(B, Hq, Q, K, generator=g) < 0.3] = 0.0
            got = fn(dlogits.clone(), Hkv)
            # The bias is broadcast: logits = base + s[:, h // G, None, :]; autograd sums it back.
            s = torch.zeros(B, Hkv, K, dtype=torch.float64, requires_grad=True)
            logits = s.repeat_interleave(Hq // Hkv, dim=1)[:, :, None, :].expand(B, Hq, Q, K)
            (want,) = torch.autograd.grad(logits, s, dlogits)
            expect_tensor(got)
            where = f"B={B}, Hq={Hq}, Hkv={Hkv}, Q={Q}, K={K} (seed {seed})"
            torch.testing.assert_close(got, want, msg=context(where))
    return run_checks("score gradient over a GQA group", trials, strict=strict, seed=seed)
