"""dma_mask against the plain-loop reference of DESIGN.md section 3.2, plus its properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dma_ref import dma_mask

MODES = [(True, "row"), (False, "row"), (True, "global"), (False, "global")]

# A tiny value set makes ties the rule rather than the exception; -inf is a legal score.
TIE_VALUES = [-math.inf, -1.0, 0.0, 0.5, 2.0]


def random_scores(B, H, K, kind):
    if kind == "distinct":
        return torch.randn(B, H, K)
    if kind == "ties":
        idx = torch.randint(len(TIE_VALUES), (B, H, K))
        return torch.tensor(TIE_VALUES)[idx]
    if kind == "bf16":                     # bf16 rounding of nearby scores: many exact ties
        return (1 + 0.05 * torch.randn(B, H, K)).to(torch.bfloat16)
    raise ValueError(kind)


@pytest.mark.parametrize("causal,mode", MODES)
@pytest.mark.parametrize("kind", ["distinct", "ties", "bf16"])
@pytest.mark.parametrize("K,w", [(1, 1), (7, 1), (9, 3), (16, 5), (13, 12), (10, 10), (8, 20)])
def test_matches_brute_force(ref, causal, mode, kind, K, w):
    s = random_scores(2, 3, K, kind)
    got = dma_mask(s, w, causal=causal, mode=mode)
    assert got.dtype == torch.bool and got.shape == (2, 3, K, K)
    assert torch.equal(got, ref.mask(s, w, causal=causal, mode=mode))


@pytest.mark.parametrize("causal,mode", MODES)
@pytest.mark.parametrize("kind", ["distinct", "ties"])
@pytest.mark.parametrize("K,Q,w", [(12, 1, 4), (12, 5, 4), (12, 12, 4), (9, 3, 1), (6, 2, 9)])
def test_q_len_is_bottom_right_aligned(ref, causal, mode, kind, K, Q, w):
    s = random_scores(1, 2, K, kind)
    got = dma_mask(s, w, q_len=Q, causal=causal, mode=mode)
    assert got.shape == (1, 2, Q, K)
    assert torch.equal(got, ref.mask(s, w, q_len=Q, causal=causal, mode=mode))
    # The Q rows are the last Q rows of the full mask: row i sits at position K - Q + i.
    assert torch.equal(got, dma_mask(s, w, causal=causal, mode=mode)[:, :, K - Q:])


@pytest.mark.parametrize("K", [1, 5, 11])
def test_window_at_least_K_is_plain_attention(K):
    s = torch.randn(2, 2, K)
    causal = torch.ones(K, K, dtype=torch.bool).tril()
    for w in (K, K + 1, 10 * K):
        assert torch.equal(dma_mask(s, w), causal.expand(2, 2, K, K))
        assert torch.equal(dma_mask(s, w, mode="global"), causal.expand(2, 2, K, K))
        assert dma_mask(s, w, causal=False).all()


def test_window_one_keeps_the_running_best_key():
    # Row mode, w = 1: position p keeps the argmax of s[:p+1] (the latest one on ties).
    s = torch.tensor([[[1.0, 3.0, 2.0, 3.0, 5.0, -1.0]]])
    expected = [0, 1, 1, 3, 4, 4]
    m = dma_mask(s, 1)
    assert m.sum(-1).eq(1).all()
    assert m[0, 0].int().argmax(-1).tolist() == expected


def test_later_key_wins_a_tie():
    # All scores equal: each row keeps its w latest keys; globally the w last keys win.
    K, w = 8, 3
    s = torch.zeros(1, 1, K)
    m = dma_mask(s, w)[0, 0]
    for p in range(K):
        assert m[p].nonzero().flatten().tolist() == list(range(max(0, p - w + 1), p + 1))
    g = dma_mask(s, w, mode="global")[0, 0]
    assert g[-1].nonzero().flatten().tolist() == [5, 6, 7]
    assert not g[:5].any()                              # rows before the set are empty


def test_global_mode_can_leave_rows_empty():
    s = torch.arange(10.0).view(1, 1, 10)               # the best keys are the last ones
    m = dma_mask(s, 3, mode="global")[0, 0]
    assert m.sum(-1).tolist() == [0] * 7 + [1, 2, 3]


# ---------------------------------------------------------------- properties (hypothesis)

scores_lists = st.lists(
    st.one_of(st.sampled_from(TIE_VALUES), st.floats(-4, 4, allow_nan=False, width=16)),
    min_size=1, max_size=24)


def as_tensor(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, -1)


@settings(max_examples=150, deadline=None)
@given(values=scores_lists, w=st.integers(1, 30))
def test_property_matches_brute_force(ref, values, w):
    s = as_tensor(values)
    for causal, mode in MODES:
        assert torch.equal(dma_mask(s, w, causal=causal, mode=mode),
                           ref.mask(s, w, causal=causal, mode=mode))


@settings(max_examples=150, deadline=None)
@given(values=scores_lists, w=st.integers(1, 30))
def test_property_row_counts(values, w):
    s = as_tensor(values)
    K = s.shape[-1]
    p = torch.arange(K)
    assert torch.equal(dma_mask(s, w)[0, 0].sum(-1), torch.clamp(p + 1, max=w))
    assert dma_mask(s, w, causal=False)[0, 0].sum(-1).eq(min(w, K)).all()
    g = dma_mask(s, w, mode="global")[0, 0].sum(-1)
    assert (g <= torch.clamp(p + 1, max=w)).all() and g[-1] == min(w, K)
    assert (g[1:] >= g[:-1]).all()                      # the global set only grows with p


@settings(max_examples=150, deadline=None)
@given(values=scores_lists, w=st.integers(1, 30))
def test_property_kept_keys_outrank_dropped_keys(values, w):
    # Within each causal row, every kept key beats every dropped candidate by (s_j, j): among
    # equal scores, the later key is the one kept.
    s = as_tensor(values)
    m = dma_mask(s, w)[0, 0]
    for p in range(len(values)):
        kept = [(values[j], j) for j in range(p + 1) if m[p, j]]
        dropped = [(values[j], j) for j in range(p + 1) if not m[p, j]]
        if kept and dropped:
            assert min(kept) > max(dropped)
            for sj, j in kept:
                assert not any(sd == sj and d > j for sd, d in dropped)


@settings(max_examples=150, deadline=None)
@given(values=scores_lists, w=st.integers(1, 30))
def test_property_lifetimes_are_intervals(values, w):
    # Causal row mode: the rows keeping key j are one interval that starts at row j (or none).
    m = dma_mask(as_tensor(values), w)[0, 0]
    K = len(values)
    for j in range(K):
        rows = m[:, j].nonzero().flatten().tolist()
        if rows:
            assert rows[0] == j and rows == list(range(j, rows[-1] + 1))


@settings(max_examples=100, deadline=None)
@given(values=scores_lists, w=st.integers(1, 30), BM=st.integers(1, 8))
def test_property_union_of_a_query_block_is_small(values, w, BM):
    # Any BM consecutive rows keep at most w + BM - 1 distinct keys (DESIGN.md section 5).
    m = dma_mask(as_tensor(values), w)[0, 0]
    K = len(values)
    for start in range(K):
        union = m[start:start + BM].any(0).sum().item()
        assert union <= w + BM - 1
