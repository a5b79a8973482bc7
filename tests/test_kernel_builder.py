"""The kernels' mask builder (kernels/ranks.py, kernels/plan.py) against the references.

* ``build_thresholds`` must equal theta_p (the w-th smallest rank of each prefix, sorted
  directly) and ``build_lifetimes`` ``dma_ref.key_lifetimes`` (heap reference) exactly, on
  random, heavily tied, increasing and decreasing scores, for every window including 1 and
  >= K and block / table / rank-chunk sizes from 2 up (many blocks and chunks on small K); on
  small cases also the brute-force mask of conftest (shares no code with dma_ref).
* The per-block key lists plus the diagonal range must cover every kept key of the block's
  rows, hold nothing else (the union is exact), hold no key twice and at most w keys, with
  walk tiles that put the tile boundaries everywhere relative to the blocks.
"""

from __future__ import annotations

import pytest
import torch
from dma_ref.kernels import (
    block_key_lists,
    build_lifetimes,
    build_plan,
    build_thresholds,
    global_lifetimes,
    rank_keys,
    topw_key_lists,
)
from dma_ref.kernels.ranks import thresholds_unchecked
from hypothesis import given, settings
from hypothesis import strategies as st

from dma_ref import dma_mask, key_lifetimes
from dma_ref.lifetimes import mask_from_lifetimes
from dma_ref.mask import key_order, key_ranks
from dma_ref.tiling import block_positions


def scores(B: int, H: int, K: int, seed: int, ties: int) -> torch.Tensor:
    """Random scores; ``ties > 0`` rounds them to about ``ties`` distinct values."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, H, K, generator=g)
    return (s * ties / 4).round() if ties else s


def ordered(kind: str, B: int, H: int, K: int, seed: int) -> torch.Tensor:
    """Scores of one of the shapes that stress the builder differently."""
    if kind == "increasing":      # each new key beats all earlier ones: long-lived late keys
        return torch.arange(K, dtype=torch.float32).expand(B, H, K).clone()
    if kind == "decreasing":      # the first w keys live forever, the others are never admitted
        return -torch.arange(K, dtype=torch.float32).expand(B, H, K).clone()
    return scores(B, H, K, seed, ties={"random": 0, "tied": 3, "two values": 1}[kind])


# (block_t T, table_t TB, chunk BJ): None = the defaults.
SIZES = st.sampled_from([(None, None, None), (4, 4, 4), (4, 16, 2), (8, 8, 16), (16, 32, 8),
                         (32, 64, 64)])


@settings(max_examples=40, deadline=None)
@given(K=st.integers(1, 300), w=st.integers(1, 310), sizes=SIZES,
       kind=st.sampled_from(["random", "random", "tied", "two values", "increasing",
                             "decreasing"]),
       seed=st.integers(0, 2**31 - 1))
def test_build_lifetimes_equals_reference(K, w, sizes, kind, seed):
    T, TB, BJ = sizes
    s = ordered(kind, 1, 2, K, seed)
    e = build_lifetimes(s, w, block_t=T, table_t=TB, chunk=BJ)
    assert e.dtype == torch.int64 and e.shape == s.shape
    torch.testing.assert_close(e, key_lifetimes(s, w), rtol=0, atol=0)


def prefix_thresholds(s: torch.Tensor, w: int) -> torch.Tensor:
    """theta_p by definition: the w-th smallest rank among keys <= p (-1: fewer than w keys)."""
    r = key_ranks(s)
    K = s.shape[-1]
    theta = torch.full_like(r, -1)
    for p in range(w - 1, K):
        theta[..., p] = torch.sort(r[..., :p + 1], dim=-1).values[..., w - 1]
    return theta


@pytest.mark.parametrize("K,w,sizes", [(1, 1, (2, 2, 2)), (2, 1, (2, 2, 2)), (37, 5, (2, 2, 2)),
                                       (100, 3, (4, 8, 4)), (100, 40, (4, 8, 4)),
                                       (130, 99, (8, 16, 2)), (257, 64, (None, None, None)),
                                       (300, 299, (16, 16, 32))])
@pytest.mark.parametrize("kind", ["random", "two values", "increasing", "decreasing"])
def test_build_thresholds_are_the_prefix_order_statistics(K, w, sizes, kind):
    """theta exactly, including its sentinel (>= K) while fewer than w keys exist."""
    s = ordered(kind, 1, 2, K, int(torch.randint(0, 2**31 - 1, ())))
    if w >= K:
        with pytest.raises(ValueError, match="window"):
            build_thresholds(s, w)
        return
    T, TB, BJ = sizes
    theta = build_thresholds(s, w, block_t=T, table_t=TB, chunk=BJ)
    want = prefix_thresholds(s, w)
    defined = want >= 0
    torch.testing.assert_close(theta[defined], want[defined], rtol=0, atol=0)
    assert bool((theta[~defined] >= K).all()), "before w keys exist theta must be a sentinel"


@pytest.mark.parametrize("K,w", [(1, 1), (9, 1), (17, 4), (40, 13), (33, 33), (20, 50)])
def test_build_lifetimes_equals_brute_mask(ref, K, w):
    s = scores(1, 2, K, int(torch.randint(0, 2**31 - 1, ())), ties=3)
    torch.testing.assert_close(build_lifetimes(s, w, block_t=4, table_t=8, chunk=4),
                               ref.lifetimes(ref.mask(s, w)), rtol=0, atol=0)


def test_build_lifetimes_default_sizes_at_K_1024():
    """The default sizes on a longer sequence, windows from 1 to K - 1."""
    s = scores(1, 2, 1024, int(torch.randint(0, 2**31 - 1, ())), ties=6)
    for w in (1, 5, 100, 1023):
        torch.testing.assert_close(build_lifetimes(s, w), key_lifetimes(s, w), rtol=0, atol=0)


@pytest.mark.parametrize("K", [1, 5, 1023, 1024, 2500])
@pytest.mark.parametrize("ties", [0, 1, 3])
def test_rank_keys_are_key_order_key_ranks_and_the_table(K, ties):
    s = scores(2, 3, K, int(torch.randint(0, 2**31 - 1, ())), ties)
    TB, BJ = 16, 64
    ranks = rank_keys(s, block_t=16, table_t=TB, chunk=BJ)
    order = key_order(s).reshape(6, K)
    assert torch.equal(ranks.order.long(), order)
    assert torch.equal(ranks.r.long(), key_ranks(s).reshape(6, K))
    # cnt[c, t]: keys of ranks [c BJ, (c + 1) BJ) at positions < t TB
    n_c, n_tb = -(-K // BJ), -(-K // TB)
    for c in range(n_c):
        keys = order[:, c * BJ:(c + 1) * BJ]
        want = (keys[:, None, :] < (torch.arange(n_tb) * TB)[None, :, None]).sum(-1)
        assert torch.equal(ranks.cnt[:, c].long(), want), f"table column {c}"


@pytest.mark.parametrize("K", [1, 2, 63, 64, 65, 300])
@pytest.mark.parametrize("ties", [0, 1, 3])
def test_rank_keys_count_method_equals_the_sort(K, ties, rng):
    """The counting kernel (one launch) gives the sort's ranks and order, ties by position,
    -0.0 equal to 0.0, +-inf and NaN (ranks first) included; its table is all zeros."""
    seed = int(torch.randint(0, 2**31 - 1, (), generator=rng))
    s = scores(2, 3, K, seed, ties)
    if K >= 6:
        s[0, 0, :2] = torch.tensor([-0.0, 0.0])
        s[0, 1, 2:6] = torch.tensor([float("inf"), float("-inf"), float("inf"), float("nan")])
    count = rank_keys(s, method="count")
    assert torch.equal(count.r.long(), key_ranks(s).reshape(6, K)), f"seed {seed}"
    assert torch.equal(count.order.long(), key_order(s).reshape(6, K)), f"seed {seed}"
    sort = rank_keys(s, method="sort")
    assert torch.equal(sort.r, count.r) and torch.equal(sort.order, count.order), f"seed {seed}"
    assert count.TB >= K and bool((count.cnt == 0).all())


def test_rank_keys_rejects_a_table_for_the_count_method():
    s = scores(1, 1, 50, 0, ties=0)
    with pytest.raises(ValueError, match="table_t"):
        rank_keys(s, table_t=16, method="count")
    with pytest.raises(ValueError, match="method"):
        rank_keys(s, method="heap")


def test_build_lifetimes_rejects_bad_sizes():
    s = scores(1, 1, 50, 0, ties=0)
    with pytest.raises(ValueError, match="table_t"):
        build_lifetimes(s, 3, block_t=8, table_t=4)
    with pytest.raises(ValueError, match="chunk"):
        build_lifetimes(s, 3, chunk=12)


def test_global_lifetimes_give_the_global_mask():
    s = scores(2, 3, 50, int(torch.randint(0, 2**31 - 1, ())), ties=4)
    for w in (1, 7, 49, 60):
        torch.testing.assert_close(mask_from_lifetimes(global_lifetimes(s, w)),
                                   dma_mask(s, w, mode="global"), rtol=0, atol=0)


@settings(max_examples=50, deadline=None)
@given(K=st.integers(1, 130), data=st.data(), block_q=st.sampled_from([1, 2, 8, 16, 32]),
       mode=st.sampled_from(["row", "global"]), tile=st.sampled_from([1024, 2, 4, 16]),
       seed=st.integers(0, 2**31 - 1))
def test_block_lists_cover_exactly_the_kept_keys(K, data, block_q, mode, tile, seed):
    Q = data.draw(st.integers(1, K))
    w = data.draw(st.integers(1, K + 2))
    s = scores(1, 2, K, seed, ties=3)
    mask = dma_mask(s, w, q_len=Q, mode=mode)[0]                        # [2, Q, K]
    if w >= K:
        assert build_plan(s, w, Q, mode=mode, block_q=block_q).dense
        return
    ranks = rank_keys(s, block_t=8, table_t=8, chunk=8)
    theta = thresholds_unchecked(ranks, w) if mode == "row" else None
    idx, start, count = block_key_lists(ranks, theta, Q, block_q, w, tile=tile)
    n_qb = -(-Q // block_q)
    assert start.shape == count.shape == (2, n_qb)
    for h in range(2):
        for b in range(n_qb):
            p0, p1 = block_positions(b, block_q, Q, K)
            lst = idx[start[h, b]: start[h, b] + count[h, b]].long()
            assert len(lst) <= w and len(set(lst.tolist())) == len(lst), "a key listed twice"
            assert torch.all(lst < p0)
            visited = torch.zeros(K, dtype=torch.bool)
            visited[lst] = True
            visited[p0:p1 + 1] = True                                   # the diagonal range
            kept = mask[h, p0 - (K - Q): p1 - (K - Q) + 1].any(0)        # union of the rows
            assert not (kept & ~visited).any(), "a kept key is missing from the block's keys"
            assert not (visited[:p0] & ~kept[:p0]).any(), "the list holds a key nobody keeps"


def test_build_plan_drops_the_lists_from_2w_at_least_K():
    s = scores(1, 2, 100, int(torch.randint(0, 2**31 - 1, ())), ties=2)
    wide = build_plan(s, 50, 100, block_q=16)                     # 2w >= K: no lists, e kept
    assert wide.dense and wide.use_e and wide.idx.numel() == 0
    torch.testing.assert_close(wide.e.long(), build_lifetimes(s, 50).reshape(2, 100))
    forced = build_plan(s, 50, 100, block_q=16, lists=True)      # the deterministic backward
    assert not forced.dense and forced.idx.numel() > 0
    assert not build_plan(s, 49, 100, block_q=16).dense
    full = build_plan(s, 100, 100, block_q=16)                    # w >= K: no selection
    assert full.dense and not full.use_e


def test_build_plan_lists_match_block_key_lists():
    s = scores(2, 2, 200, int(torch.randint(0, 2**31 - 1, ())), ties=0)
    plan = build_plan(s, 20, 150, block_q=16)
    ranks = rank_keys(s)
    idx, start, count = block_key_lists(ranks, thresholds_unchecked(ranks, 20), 150, 16, 20)
    assert plan.window == 20 and plan.n_qb == 10
    torch.testing.assert_close(plan.count, count, rtol=0, atol=0)
    for bh in range(4):
        for b in range(10):
            a = plan.idx[plan.start[bh, b]: plan.start[bh, b] + plan.count[bh, b]]
            torch.testing.assert_close(a, idx[start[bh, b]: start[bh, b] + count[bh, b]])


def test_topw_lists_are_the_noncausal_selection():
    s = scores(2, 2, 45, int(torch.randint(0, 2**31 - 1, ())), ties=3)
    idx, start, count = topw_key_lists(s, 10, n_qb=3)
    mask = dma_mask(s, 10, causal=False)                                # [2, 2, 45, 45]
    for bh in range(4):
        for b in range(3):
            lst = idx[start[bh, b]: start[bh, b] + count[bh, b]].long()
            want = torch.nonzero(mask.reshape(4, 45, 45)[bh, 0]).flatten()
            torch.testing.assert_close(lst, want, rtol=0, atol=0)


def test_block_key_lists_slots_and_sizes():
    s = scores(2, 1, 300, int(torch.randint(0, 2**31 - 1, ())), ties=0)
    ranks = rank_keys(s)
    idx, start, count = block_key_lists(ranks, thresholds_unchecked(ranks, 20), 300, 16, 20)
    assert idx.dtype == count.dtype == torch.int32 and start.dtype == torch.int64
    assert idx.numel() == 2 * 19 * 20                                   # one slot of w per block
    torch.testing.assert_close(start.flatten().long(), torch.arange(0, 2 * 19 * 20, 20))
    assert int(count.max()) <= 20 and int(count.min()) >= 0


def test_mask_builder_needs_triton(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    s = scores(1, 1, 30, 0, ties=0)
    with pytest.raises(RuntimeError, match="setup_device"):
        build_plan(s, 3, 30)
    # build_lifetimes falls back to the reference on a CPU
    torch.testing.assert_close(build_lifetimes(s, 3), key_lifetimes(s, 3), rtol=0, atol=0)
