"""naive_dma_attention against a float64 loop implementation with the brute-force mask."""

from __future__ import annotations

import math

import pytest
import torch

from dma_ref import dense_attention, naive_dma_attention
from dma_ref.naive import sdpa_dma_attention


def inputs(B=1, Hq=4, Hkv=2, Q=9, K=9, D=4, dtype=torch.float64, grad=False):
    q = torch.randn(B, Hq, Q, D, dtype=dtype)
    k = torch.randn(B, Hkv, K, D, dtype=dtype)
    v = torch.randn(B, Hkv, K, D, dtype=dtype)
    s = torch.randn(B, Hkv, K, dtype=dtype)
    return [t.requires_grad_(grad) for t in (q, k, v, s)]


CASES = [  # (Hq, Hkv, Q, K, w, causal, mode)
    (2, 2, 8, 8, 3, True, "row"),
    (4, 2, 9, 9, 4, True, "row"),          # GQA
    (3, 1, 9, 9, 2, True, "row"),          # MQA
    (4, 2, 3, 10, 4, True, "row"),         # Q < K, bottom-right
    (4, 2, 1, 10, 4, True, "row"),         # decoding one token
    (4, 2, 7, 7, 3, False, "row"),         # non-causal
    (4, 2, 8, 8, 3, True, "global"),
    (4, 2, 4, 8, 3, True, "global"),
    (2, 1, 6, 6, 9, True, "row"),          # w >= K
    (4, 2, 9, 9, 1, True, "row"),          # w = 1
]


@pytest.mark.parametrize("scores", ["random", "ties", "-inf"])
@pytest.mark.parametrize("Hq,Hkv,Q,K,w,causal,mode", CASES)
def test_forward_and_lse_match_loops(ref, Hq, Hkv, Q, K, w, causal, mode, scores):
    q, k, v, s = inputs(B=2, Hq=Hq, Hkv=Hkv, Q=Q, K=K)
    if scores == "ties":
        s = (s * 1.5).round()                               # a few distinct values: many ties
    elif scores == "-inf":
        s[..., ::3] = -math.inf                             # every third key can carry no weight
    keep = ref.mask(s, w, q_len=Q, causal=causal, mode=mode)
    o_ref, lse_ref = ref.attention(q, k, v, s, keep)
    o, lse = naive_dma_attention(q, k, v, s, w, causal=causal, mode=mode, return_lse=True)
    assert o.shape == q.shape and o.dtype == q.dtype
    assert lse.shape == (2, Hq, Q) and lse.dtype == torch.float32
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lse, lse_ref.float())


def test_scale_argument(ref):
    q, k, v, s = inputs()
    keep = ref.mask(s, 3)
    o_ref, _ = ref.attention(q, k, v, s, keep, scale=0.9)
    torch.testing.assert_close(naive_dma_attention(q, k, v, s, 3, scale=0.9), o_ref)


def test_float32_against_float64_reference(ref):
    q, k, v, s = inputs(B=2, Q=16, K=16, D=8, dtype=torch.float32)
    o_ref, lse_ref = ref.attention(q, k, v, s, ref.mask(s, 5))
    o, lse = naive_dma_attention(q, k, v, s, 5, return_lse=True)
    assert o.dtype == torch.float32
    torch.testing.assert_close(o.double(), o_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse.double(), lse_ref, rtol=1e-5, atol=1e-5)


def empty_row_case(grad=False):
    """Global mode with the best keys last: the first K - w rows keep nothing."""
    q, k, v, _ = inputs(Q=8, K=8, grad=grad)
    s = torch.arange(8, dtype=torch.float64).view(1, 1, 8).repeat(1, 2, 1).requires_grad_(grad)
    return q, k, v, s


def test_empty_rows_give_zero_output_and_minus_inf_lse():
    q, k, v, s = empty_row_case(grad=True)
    o, lse = naive_dma_attention(q, k, v, s, 3, mode="global", return_lse=True)
    assert torch.equal(o[:, :, :5], torch.zeros_like(o[:, :, :5]))
    assert lse[:, :, :5].eq(-math.inf).all() and torch.isfinite(lse[:, :, 5:]).all()
    assert not torch.isnan(o).any()
    (o * torch.randn_like(o)).sum().backward()
    for t in (q, k, v, s):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[:, :, :5], torch.zeros_like(q.grad[:, :, :5]))


def test_all_kept_scores_minus_inf_is_an_empty_row():
    q, k, v, s = inputs(Q=4, K=4)
    s = torch.full_like(s, -math.inf)
    o, lse = naive_dma_attention(q, k, v, s, 2, return_lse=True)
    assert torch.equal(o, torch.zeros_like(o)) and lse.eq(-math.inf).all()


def test_minus_inf_scores_keep_every_gradient_finite():
    """One -inf score used to turn every gradient NaN: row 0 keeps only key 0 (w = 2), an empty
    row, and 0 * nan from logsumexp's backward reached dq, dk and ds. An empty row contributes
    nothing, so zeroing its output gradient must not change any gradient."""
    q, k, v, s = inputs(Q=6, K=6, grad=True)
    with torch.no_grad():
        s[:, :, 0] = -math.inf
        s[:, :, 3] = -math.inf
    do = torch.randn(q.shape, dtype=q.dtype)
    grads = torch.autograd.grad(naive_dma_attention(q, k, v, s, 2), (q, k, v, s), do)
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(grads[0][:, :, 0], torch.zeros_like(grads[0][:, :, 0]))
    do_cut = do.clone()
    do_cut[:, :, 0] = 0
    cut = torch.autograd.grad(naive_dma_attention(q, k, v, s, 2), (q, k, v, s), do_cut)
    for g, g_cut in zip(grads, cut):
        torch.testing.assert_close(g, g_cut, rtol=0, atol=0)


@pytest.mark.parametrize("B,Hq,Hkv,Q,K,w,causal,mode", [
    (1, 2, 1, 5, 5, 2, True, "row"),
    (1, 2, 2, 3, 6, 3, True, "row"),
    (1, 2, 1, 5, 5, 2, False, "row"),
    (1, 2, 1, 6, 6, 3, True, "global"),
    (2, 4, 2, 4, 9, 3, True, "row"),          # GQA, batch 2, Q < K
    (2, 4, 2, 4, 9, 2, True, "global"),       # the same in global mode, with empty rows
])
def test_gradcheck(B, Hq, Hkv, Q, K, w, causal, mode):
    q, k, v, s = inputs(B=B, Hq=Hq, Hkv=Hkv, Q=Q, K=K, D=3, grad=True)
    if (B, mode) == (2, "global"):
        with torch.no_grad():
            s[..., -w:] += 10.0          # T = the last w keys: rows before them keep nothing

    def f(q, k, v, s):
        o, _ = naive_dma_attention(q, k, v, s, w, causal=causal, mode=mode, return_lse=True)
        return o

    # The selection depends on s, but random scores are far apart compared with gradcheck's
    # 1e-6 steps, so the mask stays fixed and gradients flow through the bias only.
    assert torch.autograd.gradcheck(f, (q, k, v, s))


@pytest.mark.parametrize("causal,mode", [(True, "row"), (False, "row"), (True, "global")])
def test_gradients_match_dense_with_brute_mask(ref, causal, mode):
    B, Hq, Hkv, Q, K, w = 2, 4, 2, 6, 9, 3
    q, k, v, s = inputs(B=B, Hq=Hq, Hkv=Hkv, Q=Q, K=K, grad=True)
    keep = ref.mask(s, w, q_len=Q, causal=causal, mode=mode).repeat_interleave(Hq // Hkv, dim=1)
    g = torch.randn(B, Hq, Q, 4, dtype=torch.float64)
    bias = s.repeat_interleave(Hq // Hkv, dim=1)[:, :, None, :].expand(B, Hq, Q, K)
    want = torch.autograd.grad((dense_attention(q, k, v, bias=bias, mask=keep) * g).sum(), (q, k, v, s))
    got = torch.autograd.grad((naive_dma_attention(q, k, v, s, w, causal=causal, mode=mode) * g).sum(),
                              (q, k, v, s))
    for name, a, b in zip("qkvs", got, want):
        torch.testing.assert_close(a, b, msg=f"d{name} differs")


def test_unselected_keys_get_no_gradient(ref):
    B, Hq, Hkv, K, w = 1, 4, 2, 12, 2
    q, k, v, s = inputs(B=B, Hq=Hq, Hkv=Hkv, Q=K, K=K, grad=True)
    o = naive_dma_attention(q, k, v, s, w)
    (o * torch.randn_like(o)).sum().backward()
    used = ref.mask(s, w).any(dim=2)                    # [B, Hkv, K]: kept by some row
    assert (~used).any(), "the case must contain keys that no row keeps"
    assert torch.equal(k.grad[~used], torch.zeros_like(k.grad[~used]))
    assert torch.equal(v.grad[~used], torch.zeros_like(v.grad[~used]))
    assert torch.equal(s.grad[~used], torch.zeros_like(s.grad[~used]))
    assert (v.grad[used].abs().sum(-1) > 0).all()       # every kept key does receive a gradient


def test_score_gradient_sums_over_rows_and_group_heads(ref):
    # s_j enters every logit (i, h) that kept j, for all G query heads h of its group, so
    # ds_j = sum over those (i, h) of dL/dlogit_ih,j. Checked against the analytic softmax
    # derivative for L = sum over (i, h) of p_ih,0.
    B, Hq, Hkv, K, w = 1, 4, 2, 7, 3
    q, k, _, s = inputs(B=B, Hq=Hq, Hkv=Hkv, Q=K, K=K, D=K, grad=True)
    # With v = one-hot of the key index (D = K), o_i[j] = p_ij: the output is the weights.
    eye = torch.eye(K, dtype=torch.float64).expand(B, Hkv, K, K)
    o = naive_dma_attention(q, k, eye.contiguous(), s, w)
    p = o.detach()                                      # [B, Hq, Q, K] attention weights
    (ds,) = torch.autograd.grad(o[..., 0].sum(), s)     # d(sum_i,h p_i0)/ds
    # Analytic: d p_i0 / d s_j = p_i0 (1[j = 0] - p_ij) for kept j.
    want = torch.zeros(B, Hkv, K, dtype=torch.float64)
    for h in range(Hq):
        g = h // (Hq // Hkv)
        want[:, g] += (p[:, h, :, :1] * ((torch.arange(K) == 0).double() - p[:, h])).sum(1)
    torch.testing.assert_close(ds, want)


@pytest.mark.parametrize("scores", ["random", "ties", "-inf"])
@pytest.mark.parametrize("Hq,Hkv,Q,K,w,causal,mode", [c for c in CASES if c[-1] == "row"])
def test_sdpa_path_matches_the_loops_with_gradients(ref, Hq, Hkv, Q, K, w, causal, mode, scores):
    """The training path (mask as an additive -inf bias into SDPA) against the float64 loops
    (outputs) and the naive path (the gradients of q, k, v and s; its own are checked above)."""
    q, k, v, s = inputs(B=2, Hq=Hq, Hkv=Hkv, Q=Q, K=K, grad=True)
    with torch.no_grad():
        if scores == "ties":
            s.copy_((s * 1.5).round())
        elif scores == "-inf":
            s[..., ::3] = -math.inf
    keep = ref.mask(s.detach(), w, q_len=Q, causal=causal, mode=mode)
    do = torch.randn(q.shape, dtype=q.dtype)
    o_ref, _ = ref.attention(q.detach(), k.detach(), v.detach(), s.detach(), keep)
    want = torch.autograd.grad(naive_dma_attention(q, k, v, s, w, causal=causal), (q, k, v, s), do)
    o = sdpa_dma_attention(q, k, v, s, w, causal=causal)
    got = torch.autograd.grad(o, (q, k, v, s), do)
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    for name, g, g_ref in zip("qkvs", got, want):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"d{n}: {m}")


def test_sdpa_path_float32_training_sizes():
    """Float32 at a training size (N = 96, w = 16, GQA): within float32 rounding of float64."""
    q, k, v, s = inputs(B=2, Hq=4, Hkv=2, Q=96, K=96, D=16, dtype=torch.float32, grad=True)
    o = sdpa_dma_attention(q, k, v, s, 16)
    o64 = naive_dma_attention(*(t.detach().double() for t in (q, k, v, s)), 16)
    torch.testing.assert_close(o.double(), o64, rtol=1e-5, atol=1e-5)
