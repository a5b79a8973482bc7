"""The kernels' mask builder (kernels/lifetimes.py, kernels/blocks.py) against the references.

* ``build_lifetimes`` must equal ``dma_ref.key_lifetimes`` (heap reference) exactly, on random
  and heavily tied scores, for every window including 1 and >= K and every scan block size;
  on small cases also the brute-force mask of conftest (shares no code with dma_ref).
* The per-block key lists plus the diagonal range must cover every kept key of the block's
  rows, hold nothing else (the union is exact), be ascending and hold at most w keys.
"""

from __future__ import annotations

import pytest
import torch
from dma_ref.kernels import (
    block_key_lists,
    build_lifetimes,
    build_plan,
    global_lifetimes,
    topw_key_lists,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from dma_ref import dma_mask, key_lifetimes
from dma_ref.lifetimes import mask_from_lifetimes
from dma_ref.tiling import block_positions


def scores(B: int, H: int, K: int, seed: int, ties: int) -> torch.Tensor:
    """Random scores; ``ties > 0`` rounds them to about ``ties`` distinct values."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, H, K, generator=g)
    return (s * ties / 4).round() if ties else s


@settings(max_examples=150, deadline=None)
@given(K=st.integers(1, 300), w=st.integers(1, 310), block=st.sampled_from([1, 2, 3, 16, 64]),
       coarse=st.sampled_from([1, 8, 30, 64, 1024]), ties=st.sampled_from([0, 0, 1, 3, 8]),
       seed=st.integers(0, 2**31 - 1))
def test_build_lifetimes_equals_reference(K, w, block, coarse, ties, seed):
    """Every (fine, coarse) block pair: one-level scan, two-level scan, blocks of one key."""
    s = scores(2, 2, K, seed, ties)
    e = build_lifetimes(s, w, block=block, coarse=coarse)
    assert e.dtype == torch.int64 and e.shape == s.shape
    torch.testing.assert_close(e, key_lifetimes(s, w), rtol=0, atol=0)


@pytest.mark.parametrize("K,w", [(1, 1), (9, 1), (17, 4), (40, 13), (33, 33), (20, 50)])
def test_build_lifetimes_equals_brute_mask(ref, K, w):
    s = scores(1, 2, K, int(torch.randint(0, 2**31 - 1, ())), ties=3)
    torch.testing.assert_close(build_lifetimes(s, w, block=8), ref.lifetimes(ref.mask(s, w)),
                               rtol=0, atol=0)


def test_build_lifetimes_large_block_count():
    """Many scan levels (K / block = 256) and a window spanning several blocks."""
    s = scores(1, 1, 1024, int(torch.randint(0, 2**31 - 1, ())), ties=6)
    for w in (1, 5, 100, 1023):
        for coarse in (4, 64):
            torch.testing.assert_close(build_lifetimes(s, w, block=4, coarse=coarse),
                                       key_lifetimes(s, w), rtol=0, atol=0)


def test_global_lifetimes_give_the_global_mask():
    s = scores(2, 3, 50, int(torch.randint(0, 2**31 - 1, ())), ties=4)
    for w in (1, 7, 49, 60):
        torch.testing.assert_close(mask_from_lifetimes(global_lifetimes(s, w)),
                                   dma_mask(s, w, mode="global"), rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(K=st.integers(1, 130), data=st.data(), block_q=st.sampled_from([1, 2, 8, 16, 32]),
       mode=st.sampled_from(["row", "global"]), seed=st.integers(0, 2**31 - 1))
def test_block_lists_cover_exactly_the_kept_keys(K, data, block_q, mode, seed):
    Q = data.draw(st.integers(1, K))
    w = data.draw(st.integers(1, K + 2))
    s = scores(1, 2, K, seed, ties=3)
    plan = build_plan(s, w, Q, mode=mode, block_q=block_q)
    mask = dma_mask(s, w, q_len=Q, mode=mode)[0]                        # [2, Q, K]
    if w >= K:
        assert plan.dense
        return
    for h in range(2):
        for b in range(plan.n_qb):
            p0, p1 = block_positions(b, block_q, Q, K)
            lst = plan.idx[plan.start[h, b]: plan.start[h, b] + plan.count[h, b]].long()
            assert len(lst) <= w
            assert torch.all(lst[1:] > lst[:-1]) and torch.all(lst < p0)
            visited = torch.zeros(K, dtype=torch.bool)
            visited[lst] = True
            visited[p0:p1 + 1] = True                                   # the diagonal range
            kept = mask[h, p0 - (K - Q): p1 - (K - Q) + 1].any(0)        # union of the rows
            assert not (kept & ~visited).any(), "a kept key is missing from the block's keys"
            assert not (visited[:p0] & ~kept[:p0]).any(), "the list holds a key nobody keeps"


def test_topw_lists_are_the_noncausal_selection():
    s = scores(2, 2, 45, int(torch.randint(0, 2**31 - 1, ())), ties=3)
    idx, start, count = topw_key_lists(s, 10, n_qb=3)
    mask = dma_mask(s, 10, causal=False)                                # [2, 2, 45, 45]
    for bh in range(4):
        for b in range(3):
            lst = idx[start[bh, b]: start[bh, b] + count[bh, b]].long()
            want = torch.nonzero(mask.reshape(4, 45, 45)[bh, 0]).flatten()
            torch.testing.assert_close(lst, want, rtol=0, atol=0)


def test_block_key_lists_sizes_sum_to_total():
    s = scores(2, 1, 300, int(torch.randint(0, 2**31 - 1, ())), ties=0)
    e = build_lifetimes(s, 20).reshape(2, 300)
    idx, start, count = block_key_lists(e, 300, 16)
    assert idx.dtype == start.dtype == count.dtype == torch.int32
    assert int(count.sum()) == idx.numel()
    assert int(count.max()) <= 20
