"""Checkers for notebook 06 (Triton forward): the per-element keep test of a gathered tile
(bottom-right causal alignment plus lifetimes) and the per-block index lists (the unions)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import tiling as tiling_mod
from ..lifetimes import key_lifetimes
from ..mask import dma_mask
from ..numerics import cdiv
from ..tiling import block_positions, union_keys
from .core import Result, exercise, expect_tensor, forbid, generator, resolve_seed, run_checks


@exercise(points=2)
def check_keep_test(fn: Callable[..., torch.Tensor], strict: bool = False, *,
                    seed: int | None = None) -> Result:
    """``fn(i, j, e_j, Q, K) -> bool [BM, BN]``: does query row ``i`` keep gathered key ``j``?

    i int64 ``[BM]`` query rows (row i sits at position ``K - Q + i``), j int64 ``[BN]`` key ids,
    e_j int64 ``[BN]`` their lifetimes. Checked on every (row block, key chunk) of random DMA
    masks with Q < K and Q = K against ``dma_mask``.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for Q, K, w, BM, BN in [(12, 12, 3, 4, 4), (7, 25, 5, 4, 8), (1, 9, 2, 1, 3),
                                (30, 30, 40, 16, 16), (10, 40, 6, 8, 5)]:
            s = torch.randn(1, 1, K, generator=g)
            e = key_lifetimes(s, w)[0, 0]
            mask = dma_mask(s, w, q_len=Q)[0, 0]
            for i0 in range(0, Q, BM):
                i = torch.arange(i0, min(Q, i0 + BM))
                perm = torch.randperm(K, generator=g)          # gathered keys come in any order
                for c0 in range(0, K, BN):
                    j = perm[c0:c0 + BN]
                    got = fn(i.clone(), j.clone(), e[j].clone(), Q, K)
                    want = mask[i][:, j]
                    expect_tensor(got, dtype=torch.bool, shape=tuple(want.shape))
                    bad = (got != want).nonzero()
                    if bad.numel():
                        a, c = bad[0].tolist()
                        raise AssertionError(
                            f"Q={Q}, K={K}, w={w} (seed {seed}): row i={int(i[a])} (position "
                            f"{K - Q + int(i[a])}), key j={int(j[c])} with e_j={int(e[j[c]])}: "
                            f"expected {bool(want[a, c])}")
    return run_checks("keep test of a gathered tile", trials, strict=strict, seed=seed)


@exercise(points=3)
def check_union_lists(fn: Callable[..., tuple], strict: bool = False, *,
                      seed: int | None = None) -> Result:
    """``fn(e, block_m, Q) -> (offsets, indices)``: the unions of all query blocks in CSR form.

    e int64 ``[K]``; query block b holds rows ``b*block_m .. min(Q, (b+1)*block_m) - 1`` at
    positions ``K - Q + i``. offsets int64 ``[n_blocks + 1]`` with ``offsets[0] = 0``; block b's
    keys, ascending, are ``indices[offsets[b]:offsets[b+1]]``.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for Q, K, w, BM in [(16, 16, 3, 4), (9, 30, 5, 4), (40, 40, 50, 16), (1, 12, 4, 8),
                            (37, 37, 6, 16)]:
            e = key_lifetimes(torch.randn(1, 1, K, generator=g), w)[0, 0]
            with forbid("build the lists yourself: the exercise is to build union_lists, not to "
                        "call tiling.union_index_lists", (tiling_mod, "union_index_lists")):
                got = fn(e.clone(), BM, Q)
            assert isinstance(got, tuple) and len(got) == 2, "return the tuple (offsets, indices)"
            offsets, indices = (torch.as_tensor(t) for t in got)
            n_blocks = cdiv(Q, BM)
            assert offsets.shape == (n_blocks + 1,), (
                f"Q={Q}, block_m={BM}: offsets must have n_blocks + 1 = {n_blocks + 1} entries, "
                f"got {tuple(offsets.shape)}")
            assert int(offsets[0]) == 0, "offsets[0] must be 0"
            for b in range(n_blocks):
                want = union_keys(e, *block_positions(b, BM, Q, K))
                got_b = indices[int(offsets[b]):int(offsets[b + 1])].to(torch.int64)
                assert torch.equal(got_b, want), (
                    f"Q={Q}, K={K}, w={w}, block {b} (seed {seed}): got keys {got_b.tolist()}, "
                    f"expected {want.tolist()}")
    return run_checks("union index lists", trials, strict=strict, seed=seed)
