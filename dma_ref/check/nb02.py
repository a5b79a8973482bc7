"""Checkers for notebook 02 (the dynamic mask): scores from values, the row-mode mask with the
tie rule, and the lifetimes read backwards (scores that give them)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

import dma_ref

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
    forbid,
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


def _lifetime_cases(g: torch.Generator) -> list[tuple[torch.Tensor, int]]:
    """``[(e, window)]``: one head's lifetimes int64 ``[K]`` for the score cases and windows
    (w = 1, small, and w > K). The scores stay in this function: the learner's code, which runs
    later, cannot reach them through the call stack."""
    cases = []
    for s in _score_cases(g):
        for w in (1, 2, 4, s.shape[-1] + 1):
            e = key_lifetimes(s, w)
            cases += [(e[b, h].clone(), w) for b in range(e.shape[0]) for h in range(e.shape[1])]
    return cases


@exercise(points=3)
def check_lifetimes(fn: Callable[[torch.Tensor, int], torch.Tensor], strict: bool = False, *,
                    seed: int | None = None) -> Result:
    """``fn(e, window) -> float [K]``: scores whose row-mode lifetimes are ``e`` (int64 ``[K]``,
    one head), i.e. ``key_lifetimes(scores[None, None], window)[0, 0] == e``.

    Any such scores pass. While ``fn`` runs the package's lifetimes and mask functions are off,
    so a search that tries scores until ``key_lifetimes`` agrees fails."""
    seed = resolve_seed(seed)
    this = sys.modules[__name__]
    message = ("find the scores by reasoning about evictions: the package's lifetimes and masks "
               "are switched off while your function runs")
    places = [(dma_ref, "key_lifetimes"), (lifetimes_mod, "key_lifetimes"),
              (lifetimes_mod, "lifetimes_from_ranks"), (lifetimes_mod, "running_threshold"),
              (dma_ref, "dma_mask"), (mask_mod, "dma_mask"), (this, "key_lifetimes"),
              (this, "dma_mask")]

    def trials() -> None:
        for e, w in _lifetime_cases(generator(seed)):
            with forbid(message, *places):
                got = fn(e.clone(), w)
            expect_tensor(got, shape=tuple(e.shape))
            if not got.is_floating_point():
                raise AssertionError(f"return float scores, got {got.dtype}")
            yours = key_lifetimes(got.detach().float()[None, None], w)[0, 0]
            if not torch.equal(yours, e):
                j = int((yours != e).nonzero()[0])
                raise AssertionError(
                    f"window={w}, e={e.tolist()} (seed {seed}): your scores give the lifetimes "
                    f"{yours.tolist()}; key {j} should live until {int(e[j])}, not {int(yours[j])} "
                    "(at p = e_j, which key must rank lowest?)")
    return run_checks("scores from lifetimes", trials, strict=strict, seed=seed)
