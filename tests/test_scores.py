"""dma_scores against paper Eq. 3 written out with loops (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from dma_ref import dma_mask, dma_scores


def softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)   # stable log(1 + e^x)


def eq3_loops(v, delta, A, form):
    """s[b, h, j] from x[b, j, h] = sum over (h', d) of v[b, h', j, d] * delta[h' * D + d, h]."""
    B, Hkv, K, D = v.shape
    s = torch.empty(B, Hkv, K, dtype=torch.float64)
    for b in range(B):
        for j in range(K):
            for h in range(Hkv):
                x = 0.0
                for hp in range(Hkv):
                    for d in range(D):
                        x += float(v[b, hp, j, d]) * float(delta[hp * D + d, h])
                a = float(A[h]) * softplus(x)
                s[b, h, j] = math.exp(a) if form == "exp" else a
    return s


@pytest.mark.parametrize("form", ["exp", "log"])
@pytest.mark.parametrize("B,Hkv,K,D", [(1, 1, 5, 3), (2, 3, 6, 4)])
def test_matches_eq3_loops(form, B, Hkv, K, D):
    v = torch.randn(B, Hkv, K, D, dtype=torch.float64)
    delta = torch.randn(Hkv * D, Hkv, dtype=torch.float64)
    A = torch.randn(Hkv, dtype=torch.float64)
    s = dma_scores(v, delta, A, form=form)
    assert s.shape == (B, Hkv, K) and s.dtype == torch.float64
    torch.testing.assert_close(s, eq3_loops(v, delta, A, form), rtol=1e-12, atol=1e-12)


def test_default_form_is_exp_and_forms_relate_by_exp():
    v = torch.randn(2, 2, 7, 4, dtype=torch.float64)
    delta, A = torch.randn(8, 2, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    s_log = dma_scores(v, delta, A, form="log")
    torch.testing.assert_close(dma_scores(v, delta, A), torch.exp(s_log))


def test_dtype_follows_v():
    v = torch.randn(1, 2, 5, 4, dtype=torch.float32)
    s = dma_scores(v, torch.randn(8, 2), torch.randn(2))
    assert s.dtype == torch.float32


@pytest.mark.parametrize("form", ["exp", "log"])
def test_mixed_dtypes_as_a_module_under_autocast(form):
    """v in bf16, delta and A in fp32 (module parameters): Eq. 3 up to bf16 rounding of the
    parameters and of the result (a few 2^-8 relative)."""
    v = torch.randn(2, 2, 6, 4).to(torch.bfloat16)
    delta, A = torch.randn(8, 2) * 0.5, torch.randn(2) * 0.2       # |A| as after some training
    s = dma_scores(v, delta, A, form=form)
    assert s.dtype == torch.bfloat16
    want = eq3_loops(v.double(), delta.double(), A.double(), form)
    torch.testing.assert_close(s.double(), want, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("form", ["exp", "log"])
def test_A_zero_gives_constant_scores_and_no_delta_gradient(form):
    v = torch.randn(2, 2, 6, 4, dtype=torch.float64, requires_grad=True)
    delta = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    A = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    s = dma_scores(v, delta, A, form=form)
    assert torch.equal(s, torch.full_like(s, 1.0 if form == "exp" else 0.0))
    (s * torch.randn_like(s)).sum().backward()
    assert torch.equal(delta.grad, torch.zeros_like(delta))   # the step-0 pitfall
    assert torch.equal(v.grad, torch.zeros_like(v))
    assert A.grad.abs().sum() > 0                             # only A can move away from 0


def test_gradients_reach_v_delta_and_A():
    v = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    delta = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    A = torch.randn(2, dtype=torch.float64, requires_grad=True)
    for form in ("exp", "log"):
        assert torch.autograd.gradcheck(lambda v, d, a, form=form: dma_scores(v, d, a, form=form), (v, delta, A))


def test_exp_and_log_forms_rank_keys_identically_for_positive_A():
    v = torch.randn(2, 3, 40, 4, dtype=torch.float64)
    delta = torch.randn(12, 3, dtype=torch.float64)
    A = torch.rand(3, dtype=torch.float64) + 0.1
    s_exp, s_log = dma_scores(v, delta, A, form="exp"), dma_scores(v, delta, A, form="log")
    assert torch.equal(torch.argsort(s_exp, dim=-1, stable=True), torch.argsort(s_log, dim=-1, stable=True))
    for w in (1, 5, 17):
        for mode in ("row", "global"):
            assert torch.equal(dma_mask(s_exp, w, mode=mode), dma_mask(s_log, w, mode=mode))


def test_negative_A_reverses_the_ranking():
    v = torch.randn(1, 1, 30, 4, dtype=torch.float64)
    delta = torch.randn(4, 1, dtype=torch.float64)
    up = dma_scores(v, delta, torch.tensor([0.7], dtype=torch.float64), form="log")
    down = dma_scores(v, delta, torch.tensor([-0.7], dtype=torch.float64), form="log")
    assert torch.equal(torch.argsort(up, dim=-1), torch.argsort(down, dim=-1, descending=True))
