"""Checkers for notebook 02 (the dynamic mask): scores from values, the row-mode mask with the
tie rule, and key lifetimes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import lifetimes as lifetimes_mod
from .. import mask as mask_mod
from .. import scores as scores_mod
from ..lifetimes import key_lifetimes
from ..mask import dma_mask
from ..scores import dma_scores
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


def _score_cases(g: torch.Generator):
    """Scores ``[B, Hkv, K]`` with awkward cases: heavy ties, all equal, -inf, random."""
    yield torch.ones(1, 1, 9)                                            # all tied
    yield torch.randint(0, 3, (2, 2, 17), generator=g).float()           # many ties
    yield torch.randn(1, 3, 24, generator=g)
    s = torch.randn(1, 1, 12, generator=g)
    s[0, 0, ::4] = float("-inf")                                         # some keys never wanted
    yield s
    yield torch.randn(1, 2, 1, generator=g)                              # K = 1
    yield torch.randn(2, 1, 31, generator=g).to(torch.bfloat16).float()  # bf16 rounding ties


@exercise(points=1)
def check_scores(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                 strict: bool = False, *, seed: int | None = None) -> Result:
    """``fn(v, delta, A) -> s``: paper Eq. 3, ``s = exp(A * softplus(x))``.

    v ``[B, Hkv, K, D]``, delta ``[Hkv*D, Hkv]``, A ``[Hkv]``; returns s ``[B, Hkv, K]`` where
    ``x[b, j, h] = sum over (h', d) of v[b, h', j, d] * delta[h'*D + d, h]``.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for B, Hkv, K, D in [(1, 1, 5, 4), (2, 2, 7, 3), (1, 3, 6, 8), (1, 4, 1, 2)]:
            v = torch.randn(B, Hkv, K, D, generator=g, dtype=torch.float64)
            delta = torch.randn(Hkv * D, Hkv, generator=g, dtype=torch.float64)
            A = torch.randn(Hkv, generator=g, dtype=torch.float64)
            with forbid_package("dma_scores", scores_mod):
                got = fn(v.clone(), delta.clone(), A.clone())
            want = dma_scores(v, delta, A)
            expect_tensor(got, shape=(B, Hkv, K), where="s")
            where = f"B={B}, Hkv={Hkv}, K={K}, D={D} (seed {seed})"
            torch.testing.assert_close(got, want, msg=context(where))
    return run_checks("scores from values", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_row_mask(fn: Callable[[torch.Tensor, int], torch.Tensor], strict: bool = False, *,
                   seed: int | None = None) -> Result:
    """``fn(s, window) -> bool [B, Hkv, K, K]``: causal row mode, query p keeps the
    ``min(w, p + 1)`` best keys among ``j <= p``, ranked by ``(s_j, j)`` descending (on equal
    scores the later key wins)."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for s in _score_cases(g):
            for w in (1, 3, 5, s.shape[-1] + 2):
                with forbid_package("dma_mask", mask_mod):
                    got = fn(s.clone(), w)
                want = dma_mask(s, w)
                expect_tensor(got, dtype=torch.bool, shape=tuple(want.shape))
                bad = (got != want).nonzero()
                if bad.numel():
                    b, h, p, j = bad[0].tolist()
                    tie = (s[b, h, :p + 1] == s[b, h, j]).sum() > 1
                    raise AssertionError(
                        f"window={w}, scores {[round(x, 3) for x in s[b, h].tolist()]} "
                        f"(seed {seed}): query p={p} should "
                        f"{'keep' if want[b, h, p, j] else 'drop'} key j={j}"
                        + (" (a tie: the later key wins)" if tie else ""))
    return run_checks("row-mode mask with the tie rule", trials, strict=strict, seed=seed)


@exercise(points=3)
def check_lifetimes(fn: Callable[[torch.Tensor, int], torch.Tensor], strict: bool = False, *,
                    seed: int | None = None) -> Result:
    """``fn(s, window) -> int64 [B, Hkv, K]``: ``e_j`` with ``keep(p, j) <=> j <= p < e_j``
    (``e_j = j`` if key j is never admitted, ``e_j = K`` if it is never evicted)."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for s in _score_cases(g):
            for w in (1, 2, 4, s.shape[-1] + 1):
                with forbid_package("key_lifetimes", lifetimes_mod):
                    got = fn(s.clone(), w)
                want = key_lifetimes(s, w)
                expect_tensor(got, shape=tuple(want.shape))
                bad = (got.long() != want).nonzero()
                if bad.numel():
                    b, h, j = bad[0].tolist()
                    raise AssertionError(
                        f"window={w}, K={s.shape[-1]} (seed {seed}): e_{j} should be "
                        f"{int(want[b, h, j])}, got {int(got[b, h, j])} "
                        "(e_j is the first position that no longer keeps j)")
    return run_checks("key lifetimes", trials, strict=strict, seed=seed)
