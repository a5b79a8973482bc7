"""Checkers for notebook 10 (learned-mask explorer): attention on the pair tokens, and which
keys survive to the end of the sequence."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from .. import lifetimes as lifetimes_mod
from .. import mask as mask_mod
from ..lab.tasks import ROLE_QUERY, ROLE_VALUE
from ..lifetimes import key_lifetimes
from .core import Result, exercise, expect_tensor, forbid, generator, resolve_seed, run_checks


@exercise(points=1)
def check_pair_attention(fn: Callable[[torch.Tensor, torch.Tensor], float],
                         strict: bool = False, *,
                         seed: int | None = None) -> Result:
    """``fn(probs [N, N], roles int8 [N]) -> float``: the attention mass that query rows put on
    pair tokens (roles key or value, i.e. ``roles <= ROLE_VALUE``), averaged over the query rows
    (``roles == ROLE_QUERY``)."""
    from ..viz import learned  # matplotlib: imported only when this checker runs
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for N in (6, 17, 40):
            probs = torch.softmax(torch.randn(N, N, generator=g) * 2, dim=-1)
            roles = torch.randint(0, 4, (N,), generator=g).to(torch.int8)
            roles[-1] = ROLE_QUERY
            rows = roles == ROLE_QUERY
            want = probs[rows][:, roles <= ROLE_VALUE].sum(-1).mean().item()
            with forbid("write it yourself: the exercise is to average the rows, not to call "
                        "query_view", (learned, "query_view")):
                got = fn(probs.clone(), roles.clone())
            got = float(got.item() if isinstance(got, torch.Tensor) else got)
            assert abs(got - want) < 1e-5, (f"N={N} (seed {seed}): expected {want:.4f}, "
                                            f"got {got:.4f}")
    return run_checks("attention on pair tokens at the queries", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_survivors(fn: Callable[[torch.Tensor, int], torch.Tensor], strict: bool = False, *,
                    seed: int | None = None) -> Result:
    """``fn(s [K], window) -> bool [K]``: True for the keys kept by the last query (row mode,
    causal), i.e. the keys never evicted (``e_j = K``). Ties: the later key wins."""
    import dma_ref
    seed = resolve_seed(seed)
    places = [(dma_ref, "key_lifetimes"), (lifetimes_mod, "key_lifetimes"),
              (lifetimes_mod, "lifetimes_from_ranks"), (lifetimes_mod, "running_threshold"),
              (dma_ref, "dma_mask"), (mask_mod, "dma_mask"),
              (sys.modules[__name__], "key_lifetimes")]

    def trials() -> None:
        g = generator(seed)
        # Fixed ties first (random ties alone let a solution without the tie rule pass by luck):
        # all scores equal (the last w keys survive), and a tie across the w-th place.
        fixed = [torch.zeros(10), torch.tensor([2.0, 1.0, 1.0, 0.0, 1.0, 0.0])]
        for K, w, tie in [(10, 3, "fixed"), (6, 2, "fixed"), (8, 3, False), (20, 5, True),
                          (12, 12, False), (30, 1, True), (16, 7, True)]:
            s = fixed.pop(0) if tie == "fixed" else torch.randn(K, generator=g)
            if tie is True:
                s = (s * 2).round() / 2                          # few distinct values: many ties
            want = key_lifetimes(s[None, None], w)[0, 0] == K
            with forbid("write it yourself: rank the scores with the tie rule; the package's "
                        "lifetimes and masks are switched off while your function runs", *places):
                got = fn(s.clone(), w)
            expect_tensor(got, dtype=torch.bool, shape=(K,))
            bad = (got != want).nonzero().flatten().tolist()
            assert not bad, (f"K={K}, window={w}{', with ties' if tie else ''} (seed {seed}): "
                             f"key {bad[0]} "
                             f"{'survives' if want[bad[0]] else 'is evicted before the end'}")
    return run_checks("keys that survive to the end", trials, strict=strict, seed=seed)
