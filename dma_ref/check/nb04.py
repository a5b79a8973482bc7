"""Checkers for notebook 04 (tiling and online softmax): the online-softmax update of one key
tile, and the size of a query block's union of kept keys from the lifetimes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import tiling as tiling_mod
from ..lifetimes import key_lifetimes, mask_from_lifetimes
from ..tiling import online_softmax_finish, online_softmax_init, online_softmax_update
from .core import Result, context, exercise, forbid, generator, resolve_seed, run_checks


@exercise(points=3)
def check_online_softmax_update(fn: Callable[..., tuple], strict: bool = False, *,
                                seed: int | None = None) -> Result:
    """``fn(m, l, acc, x, v) -> (m, l, acc)``: one tile of online softmax.

    m ``[R]`` running max (``-inf`` before any kept logit), l ``[R]`` running sum of
    ``exp(x - m)``, acc ``[R, D]`` running ``sum exp(x - m) v``; x ``[R, C]`` the tile's logits
    (``-inf`` = masked), v ``[C, D]``. Tiles include huge logits (1e4) and rows whose first
    tiles are fully masked (the state must stay NaN-free). Checked state by state against
    ``dma_ref.tiling.online_softmax_update`` and, at the end, against a softmax of the full row.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for R, D, sizes, magnitude in [(3, 4, [5, 2, 7], 1.0), (6, 8, [4, 4, 4, 4], 30.0),
                                       (4, 2, [3, 6], 1e4), (2, 3, [1, 1, 1], 5.0)]:
            xs = [torch.randn(R, C, generator=g, dtype=torch.float64) * magnitude for C in sizes]
            for x in xs:
                x[torch.rand(x.shape, generator=g) < 0.3] = -math.inf
            xs[0][0] = -math.inf                       # row 0 sees nothing in its first tile
            xs[-1][0, 0] = 1.0                         # ... but keeps something in the end
            vs = [torch.randn(C, D, generator=g, dtype=torch.float64) for C in sizes]
            state = online_softmax_init(R, D, dtype=torch.float64)
            want = state
            for t, (x, v) in enumerate(zip(xs, vs)):
                got = fn(*(s.clone() for s in state), x.clone(), v.clone())
                want = online_softmax_update(*want, x, v)
                assert isinstance(got, tuple) and len(got) == 3, "return the tuple (m, l, acc)"
                for name, a, b in zip(("m", "l", "acc"), got, want):
                    assert not torch.isnan(a).any(), (
                        f"NaN in {name} after tile {t} (seed {seed}): a row whose logits are all "
                        "-inf so far must not give exp(-inf - (-inf))")
                    where = (f"{name} after tile {t} of sizes {sizes}, logits ~{magnitude} "
                             f"(seed {seed})")
                    torch.testing.assert_close(a, b, msg=context(where))
                state = got
            o, _ = online_softmax_finish(*state)
            x_all, v_all = torch.cat(xs, 1), torch.cat(vs, 0)
            rows = torch.isfinite(x_all).any(1)
            torch.testing.assert_close(o[rows], torch.softmax(x_all[rows], -1) @ v_all)
    return run_checks("online softmax update", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_union_size(fn: Callable[[torch.Tensor, int, int], int], strict: bool = False, *,
                     seed: int | None = None) -> Result:
    """``fn(e, p_min, p_max) -> int``: how many distinct keys the query positions
    ``p_min..p_max`` keep, from one head's lifetimes ``e [K]`` (key j is kept exactly by
    ``j <= p < e_j``). Use O(K) work: one test per key, no K x K mask."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for K, w, BM in [(20, 3, 4), (50, 7, 16), (33, 40, 8), (64, 5, 1), (45, 10, 64)]:
            s = torch.randn(1, 1, K, generator=g)
            if K > 30:
                s[..., 20:30] = torch.arange(10.0) + 5        # rising scores: keys admitted late
            e = key_lifetimes(s, w)[0, 0]
            mask = mask_from_lifetimes(e[None, None])[0, 0]
            for p_min in range(0, K, BM):
                p_max = min(K, p_min + BM) - 1
                want = int(mask[p_min:p_max + 1].any(0).sum())
                with forbid("count the union yourself: the exercise is to build union_size, not to "
                            "call tiling.union_keys or tiling.union_sizes",
                            (tiling_mod, "union_keys"), (tiling_mod, "union_sizes")):
                    got = fn(e.clone(), p_min, p_max)
                got = int(got.item() if isinstance(got, torch.Tensor) else got)
                assert got == want, (f"K={K}, w={w}, block p = {p_min}..{p_max} (seed {seed}): "
                                     f"got {got} keys, expected {want}")
    return run_checks("union size of a query block", trials, strict=strict, seed=seed)
