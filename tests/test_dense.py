"""dense_attention against torch.nn.functional.scaled_dot_product_attention (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dma_ref import dense_attention


def qkv(B=2, Hq=4, Hkv=2, Q=7, K=7, D=8, dtype=torch.float64, grad=False):
    q = torch.randn(B, Hq, Q, D, dtype=dtype, requires_grad=grad)
    k = torch.randn(B, Hkv, K, D, dtype=dtype, requires_grad=grad)
    v = torch.randn(B, Hkv, K, D, dtype=dtype, requires_grad=grad)
    return q, k, v


def bottom_right_causal(Q, K):
    """bool ``[Q, K]``: row i keeps keys ``j <= K - Q + i`` (built here, not from dma_ref)."""
    return torch.tensor([[j <= K - Q + i for j in range(K)] for i in range(Q)])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Hq,Hkv", [(3, 3), (4, 2), (4, 1)])
def test_matches_sdpa_square(causal, Hq, Hkv):
    q, k, v = qkv(Hq=Hq, Hkv=Hkv)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=Hq != Hkv)
    torch.testing.assert_close(dense_attention(q, k, v, causal=causal), want)


def test_gqa_equals_repeated_kv_heads():
    q, k, v = qkv(Hq=6, Hkv=2)
    k_rep, v_rep = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    want = F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True)
    torch.testing.assert_close(dense_attention(q, k, v, causal=True), want)


@pytest.mark.parametrize("Q,K", [(1, 9), (4, 9), (9, 9)])
def test_causal_with_fewer_queries_is_bottom_right(Q, K):
    q, k, v = qkv(Q=Q, K=K)
    keep = bottom_right_causal(Q, K)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
    torch.testing.assert_close(dense_attention(q, k, v, causal=True), want)
    # The last query row sees every key, whatever Q is.
    full = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(dense_attention(q, k, v, causal=True)[:, :, -1], full[:, :, -1])


@pytest.mark.parametrize("causal", [False, True])
def test_bias_and_scale(causal):
    B, Hq, Q, K = 2, 4, 5, 8
    q, k, v = qkv(B=B, Hq=Hq, Q=Q, K=K)
    bias = torch.randn(B, Hq, Q, K, dtype=torch.float64)
    allowed = bottom_right_causal(Q, K) if causal else torch.ones(Q, K, dtype=torch.bool)
    additive = bias.masked_fill(~allowed, float("-inf"))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=additive, scale=0.3, enable_gqa=True)
    got = dense_attention(q, k, v, causal=causal, scale=0.3, bias=bias)
    torch.testing.assert_close(got, want)


def test_bias_broadcasts_size_one_dims():
    q, k, v = qkv(Q=5, K=6)
    bias = torch.randn(1, 1, 1, 6, dtype=torch.float64)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(2, 4, 5, 6), enable_gqa=True)
    torch.testing.assert_close(dense_attention(q, k, v, bias=bias), want)


@pytest.mark.parametrize("causal", [False, True])
def test_boolean_mask(causal):
    B, Hq, Q, K = 2, 4, 6, 6
    q, k, v = qkv(B=B, Hq=Hq, Q=Q, K=K)
    mask = torch.rand(B, Hq, Q, K) < 0.6
    mask[..., 0] = True                                 # every row keeps key 0: SDPA has no NaN
    allowed = mask & bottom_right_causal(Q, K) if causal else mask
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)
    torch.testing.assert_close(dense_attention(q, k, v, causal=causal, mask=mask), want)


def test_fully_masked_rows_give_zero_not_nan():
    q, k, v = qkv(Q=4, K=4, grad=True)
    mask = torch.ones(2, 4, 4, 4, dtype=torch.bool)
    mask[:, :, 2] = False
    o = dense_attention(q, k, v, mask=mask)
    assert torch.equal(o[:, :, 2], torch.zeros_like(o[:, :, 2]))
    o.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    keep_rows = [0, 1, 3]
    want = F.scaled_dot_product_attention(q[:, :, keep_rows], k, v, enable_gqa=True)
    torch.testing.assert_close(o[:, :, keep_rows], want)


def test_gradients_match_sdpa():
    q, k, v = qkv(Q=5, K=7, grad=True)
    bias = torch.randn(2, 4, 5, 7, dtype=torch.float64, requires_grad=True)
    allowed = bottom_right_causal(5, 7)
    g = torch.randn(2, 4, 5, 8, dtype=torch.float64)
    grads = torch.autograd.grad((dense_attention(q, k, v, causal=True, bias=bias) * g).sum(),
                                (q, k, v, bias))
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~allowed, float("-inf")),
                                          enable_gqa=True)
    want = torch.autograd.grad((sdpa * g).sum(), (q, k, v, bias))
    for got_t, want_t in zip(grads, want):
        torch.testing.assert_close(got_t, want_t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_keeps_the_input_dtype(dtype):
    q, k, v = qkv(dtype=dtype)
    o = dense_attention(q, k, v, causal=True)
    assert o.dtype == dtype and o.shape == q.shape
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True,
                                          enable_gqa=True)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(o.double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_as_accurate_as_sdpa(dtype):
    """The reference accumulates in fp32: its low-precision error is the rounding of the inputs
    and the output, like SDPA's, not a softmax summed in 8 bits."""
    q, k, v = (torch.randn(1, 2, 64, 32) * 4 for _ in range(3))
    exact = dense_attention(q.double(), k.double(), v.double(), causal=True)
    ql, kl, vl = (t.to(dtype) for t in (q, k, v))
    ref = dense_attention(ql.double(), kl.double(), vl.double(), causal=True)   # rounded inputs
    err = (dense_attention(ql, kl, vl, causal=True).double() - ref).norm() / ref.norm()
    err_sdpa = (F.scaled_dot_product_attention(ql, kl, vl, is_causal=True).double() - ref).norm() / ref.norm()
    assert err <= 2 * err_sdpa + 1e-5, (float(err), float(err_sdpa))
    assert (ref - exact).norm() / exact.norm() < 0.1


def test_fp16_equal_huge_logits_average_the_values():
    # Two keys with equal logits of 14400: the output is their mean (fp16 sums would lose it).
    q = torch.full((1, 1, 1, 1), 120.0, dtype=torch.float16)
    k = torch.full((1, 1, 2, 1), 120.0, dtype=torch.float16)
    v = torch.tensor([1.0, 3.0], dtype=torch.float16).reshape(1, 1, 2, 1)
    o = dense_attention(q, k, v, scale=1.0)
    assert o.item() == 2.0


def test_bias_must_be_float():
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(TypeError, match="bias must be a float tensor"):
        dense_attention(q, q, q, bias=torch.ones(1, 1, 3, 3, dtype=torch.bool))
