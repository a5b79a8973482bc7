"""Causality and decoding (DESIGN.md section 3.4): row mode is causal, global mode leaks."""

from __future__ import annotations

import pytest
import torch

from dma_ref import dma_mask, key_lifetimes, naive_dma_attention


def inputs(B=2, Hq=4, Hkv=2, K=16, D=4):
    return (torch.randn(B, Hq, K, D, dtype=torch.float64), torch.randn(B, Hkv, K, D, dtype=torch.float64),
            torch.randn(B, Hkv, K, D, dtype=torch.float64), torch.randn(B, Hkv, K, dtype=torch.float64))


def change_future(q, k, v, s, p, ties=False):
    """New tensors whose tokens t > p differ (q, k, v and s); tokens <= p are untouched."""
    q2, k2, v2, s2 = (t.clone() for t in (q, k, v, s))
    q2[:, :, p + 1:] = torch.randn_like(q2[:, :, p + 1:])
    k2[:, :, p + 1:] = torch.randn_like(k2[:, :, p + 1:]) * 3
    v2[:, :, p + 1:] = torch.randn_like(v2[:, :, p + 1:]) * 3
    if ties:   # future keys tie with the best past key and win the tie (later key): still
        # nothing may reach back to rows <= p.
        s2[:, :, p + 1:] = s[:, :, :p + 1].amax(-1, keepdim=True).expand_as(s2[:, :, p + 1:])
    else:
        s2[:, :, p + 1:] = torch.randn_like(s2[:, :, p + 1:]) * 5
    return q2, k2, v2, s2


@pytest.mark.parametrize("w", [1, 3, 7, 20])
@pytest.mark.parametrize("ties", [False, True])
def test_row_mode_outputs_ignore_future_tokens(w, ties):
    K = 16
    q, k, v, s = inputs(K=K)
    o, lse = naive_dma_attention(q, k, v, s, w, return_lse=True)
    m = dma_mask(s, w)
    e = key_lifetimes(s, w)
    future_changed = 0
    for p in range(K - 1):
        q2, k2, v2, s2 = change_future(q, k, v, s, p, ties)
        o2, lse2 = naive_dma_attention(q2, k2, v2, s2, w, return_lse=True)
        torch.testing.assert_close(o2[:, :, :p + 1], o[:, :, :p + 1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lse2[:, :, :p + 1], lse[:, :, :p + 1], rtol=0, atol=0)
        assert torch.equal(dma_mask(s2, w)[:, :, :p + 1], m[:, :, :p + 1])
        # A key's lifetime is decided by later keys, but clipped to p + 1 it is not.
        e2 = key_lifetimes(s2, w)
        assert torch.equal(e2[..., :p + 1].clamp(max=p + 1), e[..., :p + 1].clamp(max=p + 1))
        future_changed += not torch.allclose(o2[:, :, p + 1:], o[:, :, p + 1:])
    # The changes did reach the future rows (the test would be vacuous otherwise); with the
    # tying scores a future key is always kept by the rows after p.
    assert future_changed == K - 1 if ties else future_changed >= 1


@pytest.mark.parametrize("Q", [1, 5])
@pytest.mark.parametrize("w", [1, 4, 30])
@pytest.mark.parametrize("causal,mode", [(True, "row"), (False, "row"), (True, "global")])
def test_last_Q_rows_equal_the_full_computation(Q, w, causal, mode):
    # Decoding / chunked prefill: queries for the last Q positions against all K keys.
    K = 20
    q, k, v, s = inputs(K=K)
    o_full, lse_full = naive_dma_attention(q, k, v, s, w, causal=causal, mode=mode, return_lse=True)
    o, lse = naive_dma_attention(q[:, :, K - Q:], k, v, s, w, causal=causal, mode=mode, return_lse=True)
    torch.testing.assert_close(o, o_full[:, :, K - Q:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, lse_full[:, :, K - Q:], rtol=0, atol=0)
    assert torch.equal(dma_mask(s, w, q_len=Q, causal=causal, mode=mode),
                       dma_mask(s, w, causal=causal, mode=mode)[:, :, K - Q:])


def test_decoding_step_by_step_equals_prefill():
    # Generate one token at a time with a growing KV cache: each step's row equals the
    # corresponding row of one full causal pass.
    K, w = 12, 3
    q, k, v, s = inputs(K=K)
    o_full = naive_dma_attention(q, k, v, s, w)
    for t in range(1, K + 1):
        o_t = naive_dma_attention(q[:, :, t - 1:t], k[:, :, :t], v[:, :, :t], s[:, :, :t], w)
        torch.testing.assert_close(o_t[:, :, 0], o_full[:, :, t - 1], rtol=1e-12, atol=1e-12)


def test_global_mode_leaks_the_future():
    # K = 4, w = 2. Scores [1, 2, 0, 0]: the global set is {0, 1}, row 1 attends to keys 0 and 1.
    # Raising the score of key 3 (a future token for row 1) makes the set {1, 3}: row 1 loses
    # key 0 and its output changes. Row mode keeps row 1 unchanged.
    q = torch.zeros(1, 1, 4, 2, dtype=torch.float64)
    k = torch.zeros(1, 1, 4, 2, dtype=torch.float64)
    v = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [-5.0, 5.0]]]], dtype=torch.float64)
    s = torch.tensor([[[1.0, 2.0, 0.0, 0.0]]], dtype=torch.float64)
    s_future = s.clone()
    s_future[0, 0, 3] = 9.0

    before = naive_dma_attention(q, k, v, s, 2, mode="global")[0, 0, 1]
    after = naive_dma_attention(q, k, v, s_future, 2, mode="global")[0, 0, 1]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, v[0, 0, 1])       # only key 1 is left for row 1
    assert dma_mask(s, 2, mode="global")[0, 0, 1].tolist() == [True, True, False, False]
    assert dma_mask(s_future, 2, mode="global")[0, 0, 1].tolist() == [False, True, False, False]

    row_before = naive_dma_attention(q, k, v, s, 2, mode="row")[0, 0, 1]
    row_after = naive_dma_attention(q, k, v, s_future, 2, mode="row")[0, 0, 1]
    torch.testing.assert_close(row_before, row_after, rtol=0, atol=0)


def test_global_mode_leak_is_common_on_random_inputs():
    # Not a corner case: on random scores, changing future scores changes some earlier row.
    K, w = 32, 6
    q, k, v, s = inputs(K=K)
    o = naive_dma_attention(q, k, v, s, w, mode="global")
    p = K // 2
    s2 = s.clone()
    s2[:, :, p + 1:] = s.max() + 1 + torch.rand_like(s2[:, :, p + 1:])   # future keys take over T
    o2 = naive_dma_attention(q, k, v, s2, w, mode="global")
    assert not torch.allclose(o2[:, :, :p + 1], o[:, :, :p + 1])
    assert torch.equal(o2[:, :, :p + 1], torch.zeros_like(o2[:, :, :p + 1]))  # rows emptied
