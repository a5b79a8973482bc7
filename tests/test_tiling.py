"""dma_ref.tiling against the float64 references, on sizes no block size divides."""

from __future__ import annotations

import math

import pytest
import torch

import dma_ref
from dma_ref import tiling
from dma_ref.lifetimes import mask_from_lifetimes

# (B, Hq, Hkv, Q, K, D, w, BM, BN): awkward lengths, Q < K, GQA, w >= K, BM > Q
CONFIGS = [
    (1, 1, 1, 37, 37, 8, 5, 8, 16),
    (2, 4, 2, 13, 50, 16, 7, 16, 8),
    (1, 3, 3, 29, 29, 4, 40, 4, 4),
    (1, 6, 2, 23, 41, 8, 3, 32, 5),
    (1, 2, 1, 1, 19, 8, 4, 16, 16),
]


def _inputs(B, Hq, Hkv, Q, K, D):
    q = torch.randn(B, Hq, Q, D, dtype=torch.float64)
    k = torch.randn(B, Hkv, K, D, dtype=torch.float64)
    v = torch.randn(B, Hkv, K, D, dtype=torch.float64)
    s = torch.randn(B, Hkv, K, dtype=torch.float64)
    return q, k, v, s


@pytest.mark.parametrize("Q, K, BN, causal, with_bias", [
    (20, 33, 7, True, True), (5, 5, 16, False, False), (17, 40, 1, False, True), (1, 9, 4, True, False)])
def test_online_softmax_equals_dense(Q, K, BN, causal, with_bias):
    D = 8
    q, k, v = (torch.randn(n, D, dtype=torch.float64) for n in (Q, K, K))
    bias = torch.randn(K, dtype=torch.float64) * 3 if with_bias else None
    o, lse = tiling.online_softmax_attention(q, k, v, block_n=BN, bias=bias, causal=causal)
    logits = (q @ k.T) * D**-0.5 + (0 if bias is None else bias[None, :])
    if causal:
        keep = torch.arange(K)[None, :] <= torch.arange(K - Q, K)[:, None]
        logits = logits.masked_fill(~keep, -math.inf)
    torch.testing.assert_close(o, torch.softmax(logits, -1) @ v)
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1))


def test_online_softmax_update_is_exact_for_huge_logits():
    m, l, acc = tiling.online_softmax_init(3, 2, dtype=torch.float64)
    x1 = torch.tensor([[1e4, -math.inf], [-math.inf, -math.inf], [0.0, 1.0]], dtype=torch.float64)
    x2 = torch.tensor([[2e4, 0.0], [-math.inf, -math.inf], [5.0, -1.0]], dtype=torch.float64)
    v1, v2 = torch.randn(2, 2, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    m, l, acc = tiling.online_softmax_update(m, l, acc, x1, v1)
    m, l, acc = tiling.online_softmax_update(m, l, acc, x2, v2)
    o, lse = tiling.online_softmax_finish(m, l, acc)
    x = torch.cat([x1, x2], 1)
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o[[0, 2]], torch.softmax(x[[0, 2]], -1) @ torch.cat([v1, v2]))
    assert lse[1] == -math.inf and (o[1] == 0).all()


@pytest.mark.parametrize("cfg", CONFIGS)
def test_tiled_dma_forward_matches_naive_and_loops(cfg, ref):
    B, Hq, Hkv, Q, K, D, w, BM, BN = cfg
    q, k, v, s = _inputs(B, Hq, Hkv, Q, K, D)
    o, lse = tiling.tiled_dma_forward(q, k, v, s, w, block_m=BM, block_n=BN)
    o_ref, lse_ref = ref.attention(q, k, v, s, ref.mask(s, w, q_len=Q))
    torch.testing.assert_close(o, o_ref)
    torch.testing.assert_close(lse, lse_ref.float())
    assert lse.dtype == torch.float32


def test_tiled_dma_forward_fp32_and_ties():
    q, k, v, s = (t.float() for t in _inputs(1, 4, 2, 45, 45, 16))
    s = torch.round(s * 2) / 2                     # many equal scores: the tie rule matters
    o, lse = tiling.tiled_dma_forward(q, k, v, s, 6, block_m=16, block_n=8)
    o_ref, lse_ref = dma_ref.naive_dma_attention(q, k, v, s, 6, return_lse=True)
    torch.testing.assert_close(o, o_ref, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse, lse_ref, atol=2e-5, rtol=2e-5)


def test_tiled_dma_forward_rejects_bad_input():
    q, k, v, s = _inputs(1, 2, 1, 8, 8, 4)
    with pytest.raises(ValueError, match="s must have shape"):
        tiling.tiled_dma_forward(q, k, v, s[:, :, :5], 3)
    with pytest.raises(ValueError, match="window"):
        tiling.tiled_dma_forward(q, k, v, s, 0)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_unions_from_the_mask(cfg):
    B, _Hq, Hkv, Q, K, _D, w, BM, _BN = cfg
    s = torch.randn(B, Hkv, K)
    e = dma_ref.key_lifetimes(s, w)
    mask = dma_ref.dma_mask(s, w, q_len=Q)                                # [B, Hkv, Q, K]
    sizes = tiling.union_sizes(e, BM, Q)
    for b in range(sizes.shape[-1]):
        rows = mask[:, :, b * BM:(b + 1) * BM]                             # [B, Hkv, rows, K]
        want = rows.any(-2)                                                # [B, Hkv, K]
        torch.testing.assert_close(sizes[..., b], want.sum(-1))
        p_min, p_max = tiling.block_positions(b, BM, Q, K)
        for bb in range(B):
            for h in range(Hkv):
                got = tiling.union_keys(e[bb, h], p_min, p_max)
                torch.testing.assert_close(got, want[bb, h].nonzero().flatten())
    assert int(sizes.max()) <= w + BM - 1


def test_union_bound_is_reached_and_never_exceeded():
    # Random scores at N = 2048 reach the bound's order; it must never be exceeded.
    for w, BM in [(64, 32), (7, 16), (256, 64)]:
        e = dma_ref.key_lifetimes(torch.randn(1, 3, 2048), w)
        sizes = tiling.union_sizes(e, BM)
        assert int(sizes.max()) <= w + BM - 1
        assert int(sizes[..., -1].min()) >= w                  # late blocks keep >= w keys
    # Increasing scores: every new key is the best so far, each row of the block adds one key.
    s = torch.arange(100, dtype=torch.float32)[None, None]
    sizes = tiling.union_sizes(dma_ref.key_lifetimes(s, 10), 16)
    assert int(sizes[0, 0, -2]) == 10 + 16 - 1


def test_union_index_lists_csr():
    s = torch.randn(1, 1, 77)
    e = dma_ref.key_lifetimes(s, 9)[0, 0]
    offsets, indices = tiling.union_index_lists(e, 16, 70)
    assert offsets[0] == 0 and offsets[-1] == len(indices) and len(offsets) == 6
    for b in range(5):
        torch.testing.assert_close(indices[offsets[b]:offsets[b + 1]],
                                   tiling.union_keys(e, *tiling.block_positions(b, 16, 70, 77)))


@pytest.mark.parametrize("Q, K, w, BM, BN", [(37, 37, 5, 8, 16), (20, 61, 9, 16, 7), (64, 64, 70, 16, 16),
                                             (100, 100, 3, 32, 32)])
def test_tile_map_and_stats_from_the_mask(Q, K, w, BM, BN):
    s = torch.randn(1, 2, K)
    e = dma_ref.key_lifetimes(s, w)
    mask = mask_from_lifetimes(e, Q)                                      # [1, 2, Q, K]
    torch.testing.assert_close(mask, dma_ref.dma_mask(s, w, q_len=Q))
    causal = torch.arange(K)[None, :] <= torch.arange(K - Q, K)[:, None]
    kept_tiles = causal_tiles = 0
    for h in range(2):
        tm = tiling.tile_map(e[0, h], BM, BN, Q)
        for a in range(tm.shape[0]):
            for c in range(tm.shape[1]):
                tile = (slice(a * BM, (a + 1) * BM), slice(c * BN, (c + 1) * BN))
                want = (tiling.TILE_KEPT if mask[0, h][tile].any()
                        else tiling.TILE_EMPTY if causal[tile].any() else tiling.TILE_FUTURE)
                assert int(tm[a, c]) == want, (h, a, c)
                kept_tiles += want == tiling.TILE_KEPT
                causal_tiles += want != tiling.TILE_FUTURE
    st = tiling.tile_stats(e, BM, BN, Q)
    assert st["kept_fraction"] == pytest.approx(mask.sum().item() / (2 * causal.sum().item()))
    assert st["tile_fraction"] == pytest.approx(kept_tiles / causal_tiles)
    sizes = tiling.union_sizes(e, BM, Q)
    assert st["union_max"] == int(sizes.max()) and st["union_mean"] == pytest.approx(sizes.double().mean().item())
    rows = torch.tensor([min(Q, (b + 1) * BM) - b * BM for b in range(sizes.shape[-1])])
    assert st["work_ratio"] == pytest.approx((sizes * rows).sum().item() / (2 * causal.sum().item()))


def test_design_table_shape():
    """DESIGN.md section 5: at N = 4096, w = 1024, every causal 128x64 tile holds a kept pair
    while under half the causal pairs are kept; the unions stay below w + BM - 1."""
    e = dma_ref.key_lifetimes(torch.randn(1, 2, 4096), 1024)
    st = tiling.tile_stats(e, 128, 64)
    assert st["tile_fraction"] > 0.99
    assert 0.40 < st["kept_fraction"] < 0.47
    assert 900 < st["union_mean"] < 1024 + 127 and st["union_max"] <= 1024 + 127


def test_union_sizes_count_equals_union_keys_at_scale():
    """The O(K)-for-all-blocks count against the per-block lists, at a size with no mask."""
    K, Q, w, BM = 5000, 3333, 97, 128
    e = dma_ref.key_lifetimes(torch.randn(2, 1, K), w)
    sizes = tiling.union_sizes(e, BM, Q)
    for b in range(sizes.shape[-1]):
        p_min, p_max = tiling.block_positions(b, BM, Q, K)
        for r in range(2):
            assert int(sizes[r, 0, b]) == len(tiling.union_keys(e[r, 0], p_min, p_max))
    assert int(sizes.max()) <= w + BM - 1


def test_viz_tiles_data_and_figures():
    """viz.tiles: union_growth equals tile_stats per N; every plot function draws."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dma_ref.viz import tiles as viz_tiles

    Ns = [200, 333]
    data = viz_tiles.union_growth(Ns, 17, 16, 8, Hkv=1, seed=3)
    g = torch.Generator().manual_seed(3)
    for n_index, N in enumerate(Ns):
        e = dma_ref.key_lifetimes(torch.randn(1, 1, N, generator=g), 17)
        st = tiling.tile_stats(e, 16, 8)
        for key in ("union_mean", "union_max", "kept_fraction", "tile_fraction", "work_ratio"):
            assert data[key][n_index] == pytest.approx(st[key])
    e = dma_ref.key_lifetimes(torch.randn(1, 1, 64), 8)[0, 0]
    for fig in (viz_tiles.plot_tile_map(e, 16, 16), viz_tiles.plot_block_union(e, 1, 16),
                viz_tiles.plot_union_growth(Ns, data, 17, 16), viz_tiles.plot_gqa_packing(G=2)):
        assert fig.axes
        plt.close(fig)


@pytest.mark.parametrize("Q,K,w,BN", [(37, 37, 5, 8), (9, 30, 4, 16), (20, 20, 64, 16),
                                      (1, 13, 2, 4)])
def test_key_major_rows_cover_every_kept_pair_and_no_more(Q, K, w, BN, rng):
    """The row range of each key block holds every row that keeps one of its keys; it starts at
    the block's first causal row and ends at most one block past the last row that keeps a key
    (a never-kept key j has e_j = j, which can raise the block's max e_j by less than BN)."""
    from dma_ref.viz.tiles import key_major_rows

    s = torch.randn(1, 1, K, generator=rng)
    s[..., K // 3:K // 3 + 4] = 0.5                     # ties
    e = dma_ref.key_lifetimes(s, w)[0, 0]
    keep = mask_from_lifetimes(e[None, None], Q)[0, 0]  # [Q, K], rows at K - Q + i
    lo, hi = key_major_rows(e, Q, BN)
    assert lo.shape == hi.shape == (math.ceil(K / BN),)
    for b in range(len(lo)):
        rows = keep[:, b * BN:(b + 1) * BN].any(1).nonzero().flatten().tolist()
        a, z = int(lo[b]), int(hi[b])
        first = max(b * BN - (K - Q), 0)
        assert a == first, (b, a, z)
        assert all(a <= r < z for r in rows), (b, a, z, rows)
        end = rows[-1] + 1 if rows else a
        assert z <= max(end, min(b * BN + BN - (K - Q), Q)), (b, a, z, rows)
