"""DMAAttention: shapes, plumbing, gradients through Delta and A, RoPE, init, backends."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.func import functional_call

from dma_ref import DMAAttention, dma_scores, naive_dma_attention
from dma_ref.rope import apply_rope, rope_angles


def test_shapes():
    m = DMAAttention(32, num_heads=4, num_kv_heads=2, window=5)
    x = torch.randn(3, 11, 32)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    q, k, v, s = m.project(x)
    assert q.shape == (3, 4, 11, 8) and k.shape == v.shape == (3, 2, 11, 8) and s.shape == (3, 2, 11)
    assert m.delta.shape == (16, 2) and m.A.shape == (2,)


def test_explicit_head_dim():
    m = DMAAttention(24, num_heads=2, num_kv_heads=1, head_dim=6, window=3)
    q, k, _, _ = m.project(torch.randn(1, 5, 24))
    assert q.shape == (1, 2, 5, 6) and k.shape == (1, 1, 5, 6)
    assert m(torch.randn(1, 5, 24)).shape == (1, 5, 24)


@pytest.mark.parametrize("causal,mode,form", [(True, "row", "exp"), (False, "row", "log"),
                                              (True, "global", "exp")])
def test_forward_is_projection_then_naive_dma(causal, mode, form):
    m = DMAAttention(16, num_heads=4, num_kv_heads=2, window=3, causal=causal, mode=mode, form=form,
                     rope=False).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    B, N, _ = x.shape
    q = (x @ m.q_proj.weight.T).view(B, N, 4, 4).transpose(1, 2)
    k = (x @ m.k_proj.weight.T).view(B, N, 2, 4).transpose(1, 2)
    v = (x @ m.v_proj.weight.T).view(B, N, 2, 4).transpose(1, 2)
    s = dma_scores(v, m.delta, m.A, form=form)
    o = naive_dma_attention(q, k, v, s, 3, causal=causal, mode=mode)
    want = o.transpose(1, 2).reshape(B, N, 16) @ m.o_proj.weight.T
    torch.testing.assert_close(m(x), want)


def test_gradcheck_through_delta_and_A():
    m = DMAAttention(8, num_heads=2, num_kv_heads=1, window=3, rope=True).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    # Scores far from each other relative to gradcheck's 1e-6 steps keep the selection fixed.
    delta = (torch.randn_like(m.delta) * 2).requires_grad_()
    A = torch.tensor([0.8], dtype=torch.float64, requires_grad=True)

    def f(delta, A):
        return functional_call(m, {"delta": delta, "A": A}, (x,))

    assert torch.autograd.gradcheck(f, (delta, A))


def test_gradients_reach_every_parameter():
    m = DMAAttention(16, num_heads=4, num_kv_heads=2, window=3)
    m(torch.randn(2, 10, 16)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_rope_rotates_q_and_k_only():
    plain = DMAAttention(16, num_heads=2, num_kv_heads=2, window=4, rope=False).double()
    rotary = DMAAttention(16, num_heads=2, num_kv_heads=2, window=4, rope=True).double()
    rotary.load_state_dict(plain.state_dict())          # same weights, only RoPE differs
    x = torch.randn(1, 7, 16, dtype=torch.float64)
    q0, k0, v0, s0 = plain.project(x)
    q1, k1, v1, s1 = rotary.project(x)
    cos, sin = rope_angles(torch.arange(7), 8)
    torch.testing.assert_close(q1, apply_rope(q0, cos, sin))
    torch.testing.assert_close(k1, apply_rope(k0, cos, sin))
    assert torch.equal(v0, v1) and torch.equal(s0, s1)  # scores come from unrotated values
    assert not torch.allclose(plain(x), rotary(x))
    # RoPE makes q_i . k_j depend on positions through i - j only: shifting both by 3 keeps it.
    qa, ka = apply_rope(q0[:, :, :4], cos[:4], sin[:4]), apply_rope(k0[:, :, :4], cos[:4], sin[:4])
    qb, kb = apply_rope(q0[:, :, :4], cos[3:], sin[3:]), apply_rope(k0[:, :, :4], cos[3:], sin[3:])
    # (rope computes in float32 whatever the input dtype, hence float32 tolerances.)
    torch.testing.assert_close(qa @ ka.transpose(-1, -2), qb @ kb.transpose(-1, -2),
                               rtol=1e-5, atol=1e-5)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        DMAAttention(16, num_heads=2, backend="flash")


def test_init_statistics_of_A_and_delta():
    # 1024 KV heads of dim 1 give 1024 samples of A: std error of the std is ~0.0005.
    m = DMAAttention(1024, num_heads=1024, num_kv_heads=1024, head_dim=1, window=4, rope=False)
    A = m.A.detach()
    assert abs(A.mean().item()) < 0.004
    assert 0.017 < A.std().item() < 0.023
    d = m.delta.detach()
    assert abs(d.std().item() - 1024**-0.5) < 0.1 * 1024**-0.5   # N(0, 1 / (Hkv*D))


def kernels_with_dma_attention():
    """``dma_ref.kernels`` once it provides ``dma_attention``; skip until the kernels land."""
    kernels = importlib.import_module("dma_ref.kernels")
    if not hasattr(kernels, "dma_attention"):
        pytest.skip("dma_ref.kernels.dma_attention does not exist yet")
    return kernels


@pytest.mark.parametrize("causal,mode", [(True, "row"), (True, "global")])
def test_triton_backend_matches_naive(causal, mode):
    kernels_with_dma_attention()
    naive = DMAAttention(64, num_heads=4, num_kv_heads=2, head_dim=16, window=8, causal=causal,
                         mode=mode, backend="naive")
    triton = DMAAttention(64, num_heads=4, num_kv_heads=2, head_dim=16, window=8, causal=causal,
                          mode=mode, backend="triton")
    triton.load_state_dict(naive.state_dict())
    with torch.no_grad():
        naive.A.fill_(0.5)                              # scores that actually reorder keys
        triton.A.fill_(0.5)
    x = torch.randn(1, 32, 64)
    y_triton, y_naive = triton(x), naive(x)
    torch.testing.assert_close(y_triton, y_naive, rtol=2e-4, atol=2e-5)
    # The kernel's backward reaches the same parameter gradients, Delta and A included.
    g = torch.randn_like(y_naive)
    (y_triton * g).sum().backward()
    (y_naive * g).sum().backward()
    for (name, p_t), p_n in zip(triton.named_parameters(), naive.parameters()):
        torch.testing.assert_close(p_t.grad, p_n.grad, rtol=1e-3, atol=1e-4, msg=f"grad of {name}")


def test_autocast_inputs_are_accepted():
    """Under autocast x may be bf16 while the parameters stay fp32 (mixed precision)."""
    m = DMAAttention(16, num_heads=4, num_kv_heads=2, window=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(2, 5, 16, dtype=torch.bfloat16))
    assert y.shape == (2, 5, 16) and torch.isfinite(y.float()).all()
