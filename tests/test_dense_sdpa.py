"""DMA's dense regime through fused attention (kernels/dense_sdpa.py) against the naive path.

On a CPU the math backend runs the same construction (bias folded into two extra columns of
q and k) in float64 and in bf16: float64 must equal ``naive_dma_attention`` with ``w >= K``
(o and all four gradients), bf16 must stay within 2x the naive bf16 error of the float64
reference, and a -inf score must drop its key. ``applies`` must send nothing else its way.
"""

from __future__ import annotations

import pytest
import torch
from dma_ref.kernels import dense_sdpa
from torch.nn.attention import SDPBackend

from dma_ref import naive_dma_attention
from dma_ref.numerics import rel_err

MATH = [SDPBackend.MATH]


def inputs(rng, B, Hq, Hkv, N, D, dtype):
    q, do = (torch.randn(B, Hq, N, D, generator=rng, dtype=torch.float64) for _ in range(2))
    k, v = (torch.randn(B, Hkv, N, D, generator=rng, dtype=torch.float64) for _ in range(2))
    s = 3 * torch.randn(B, Hkv, N, generator=rng, dtype=torch.float64)
    return [t.to(dtype) for t in (q, k, v, s, do)]


def run(fn, tensors, **kw):
    *xs, do = tensors
    leaves = [t.detach().clone().requires_grad_(True) for t in xs]
    o = fn(*leaves, **kw)
    return [o.detach(), *torch.autograd.grad(o, leaves, do.to(o.dtype))]


@pytest.mark.parametrize("B,Hq,Hkv,N,D", [(1, 4, 2, 37, 16), (2, 2, 2, 64, 8),
                                          (1, 8, 2, 100, 24), (1, 3, 1, 1, 8)])
def test_float64_equals_naive_dma_with_w_at_least_n(rng, B, Hq, Hkv, N, D):
    t = inputs(rng, B, Hq, Hkv, N, D, torch.float64)
    scale = D**-0.5
    got = run(lambda q, k, v, s: dense_dma_sdpa_math(q, k, v, s, scale), t)
    want = run(lambda q, k, v, s: naive_dma_attention(q, k, v, s, N + 3), t)
    for name, g, w in zip(("o", "dq", "dk", "dv", "ds"), got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-9, msg=name)


def dense_dma_sdpa_math(q, k, v, s, scale):
    return dense_sdpa.dense_dma_sdpa(q, k, v, s, scale, backends=MATH)


def test_bf16_within_twice_the_naive_bf16_error(rng):
    t64 = inputs(rng, 1, 8, 2, 96, 32, torch.float64)
    ref = run(lambda q, k, v, s: naive_dma_attention(q, k, v, s, 96), t64)
    t16 = [x.to(torch.bfloat16) for x in t64]
    naive = run(lambda q, k, v, s: naive_dma_attention(q, k, v, s, 96), t16)
    got = run(lambda q, k, v, s: dense_dma_sdpa_math(q, k, v, s, 32**-0.5), t16)
    for name, g, n, r in zip(("o", "dq", "dk", "dv", "ds"), got, naive, ref):
        assert g.dtype == torch.bfloat16 and torch.isfinite(g).all(), name
        assert rel_err(g, r) <= 2 * rel_err(n, r), f"{name}: {rel_err(g, r):.2e} vs naive " \
                                                    f"{rel_err(n, r):.2e}"


def test_minus_inf_score_drops_the_key(rng):
    q, k, v, s, _ = inputs(rng, 1, 2, 1, 20, 8, torch.float64)
    s[0, 0, 5] = float("-inf")
    got = dense_dma_sdpa_math(q, k, v, s, 8**-0.5)
    assert torch.isfinite(got).all()
    for p in (4, 5, 6, 19):                  # softmax over the keys j <= p, j != 5 (by hand)
        keys = [j for j in range(p + 1) if j != 5]
        x = 8**-0.5 * q[0, :, p] @ k[0, 0, keys].T + s[0, 0, keys]          # [2, |keys|]
        want = torch.softmax(x, -1) @ v[0, 0, keys]
        torch.testing.assert_close(got[0, :, p], want, atol=1e-10, rtol=1e-9)


def test_applies_only_to_the_causal_dense_square_bf16_case(monkeypatch):
    def case(dtype=torch.bfloat16, Q=64, K=64, D=128):
        return torch.empty(1, 4, Q, D, dtype=dtype), torch.empty(1, 2, K, D, dtype=dtype)

    q, k = case()
    ok = {"causal": True, "return_lse": False, "forced_config": False}
    assert not dense_sdpa.applies(q, k, 64, **ok), "CPU tensors stay on the Triton path"
    cuda = torch.device("cuda")

    class Fake:                               # the shape/dtype/device of a CUDA tensor
        def __init__(self, t):
            self.shape, self.dtype, self.device = t.shape, t.dtype, cuda

    def ap(q, k, w, **kw):
        return dense_sdpa.applies(Fake(q), Fake(k), w, **{**ok, **kw})

    assert not ap(q, k, 64), "off by default (DENSE_VIA_SDPA)"
    monkeypatch.setattr(dense_sdpa, "DENSE_VIA_SDPA", True)
    assert ap(q, k, 64) and ap(q, k, 10**6)
    assert not ap(q, k, 63), "w < K is the sparse path"
    assert not ap(q, k, 64, causal=False)
    assert not ap(q, k, 64, return_lse=True)
    assert not ap(q, k, 64, forced_config=True)
    assert not ap(*case(Q=32), 64), "Q < K: fused kernels align the causal mask top-left"
    assert not ap(*case(dtype=torch.float16), 64)
    assert not ap(*case(D=136), 64)
