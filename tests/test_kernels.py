"""``dma_ref.kernels.dma_attention`` (Triton, interpreter on a CPU) against the naive reference.

Every case runs the kernels in fp32 and ``dma_ref.naive_dma_attention`` in float64 on the same
(upcast) inputs and compares o, lse and the four gradients (q, k, v, s). Fresh random inputs on
every run. The interpreter computes bf16 ``tl.dot`` wrongly, so low precisions are tested on the
GPU only (tests/gpu/test_kernels_gpu.py).

The defects DESIGN.md section 5 lists for the official Triton kernel, and the tests here that
would catch each in ours: contributions lost by backward tile skipping -> every case compares all
four gradients (``check_against_naive``); NaN on fully masked rows ->
``test_global_empty_rows_are_zero_not_nan``; top-left causal alignment when Q != K -> the Q < K and
Q = 1 rows of ``ROW_CASES``; head dim <= 128 only -> ``test_large_head_dims`` (256); no decode path
-> Q = 1. Its future leak (global selection) is kept as ``mode="global"`` and shown by
``test_dma_attention_is_causal_in_row_mode`` (row mode only).

Tolerances: fp32 kernels vs float64 typically differ by ~1e-6 absolute on O(1) values here;
``atol = 2e-5, rtol = 1e-4`` leaves a margin without hiding a wrong mask (a single wrongly kept
or dropped key moves o by ~1e-2).
"""

from __future__ import annotations

import math

import pytest
import torch
from dma_ref.kernels import KernelConfig, dma_attention

from dma_ref import naive_dma_attention

ATOL, RTOL = 2e-5, 1e-4


def make_inputs(B, Hq, Hkv, Q, K, D, *, ties: int = 0, dtype=torch.float32):
    q = torch.randn(B, Hq, Q, D, dtype=dtype)
    k = torch.randn(B, Hkv, K, D, dtype=dtype)
    v = torch.randn(B, Hkv, K, D, dtype=dtype)
    s = torch.randn(B, Hkv, K, dtype=dtype)
    if ties:
        s = (s * ties / 4).round()                      # few distinct values: many ties
    return q, k, v, s


def check_against_naive(q, k, v, s, w, *, causal=True, mode="row", scale=None, **cfg):
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, s)]
    o, lse = dma_attention(*leaves, w, causal=causal, mode=mode, scale=scale, return_lse=True,
                           **cfg)
    do = torch.randn_like(o)
    grads = torch.autograd.grad(o, leaves, do)

    ref_leaves = [t.double().requires_grad_(True) for t in (q, k, v, s)]
    o_ref, lse_ref = naive_dma_attention(*ref_leaves, w, causal=causal, mode=mode, scale=scale,
                                         return_lse=True)
    ref_grads = torch.autograd.grad(o_ref, ref_leaves, do.double())

    assert o.dtype == q.dtype and lse.dtype == torch.float32
    assert not any(torch.isnan(t).any() for t in (o, lse, *grads))
    torch.testing.assert_close(o.double(), o_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(lse, lse_ref, atol=ATOL, rtol=RTOL)      # -inf rows must match
    for name, g, g_ref in zip(("dq", "dk", "dv", "ds"), grads, ref_grads):
        torch.testing.assert_close(g.double(), g_ref, atol=ATOL, rtol=RTOL, msg=lambda m, name=name: f"{name}: {m}")
    return o, lse


# (B, Hq, Hkv, Q, K, D, w, ties)
ROW_CASES = [
    (1, 1, 1, 1, 1, 16, 1, 0),            # one token
    (1, 4, 1, 17, 17, 16, 1, 0),          # w = 1, MQA 4:1
    (1, 4, 1, 17, 17, 32, 5, 2),          # ties
    (1, 3, 3, 67, 67, 16, 13, 0),         # MHA 3:3
    (2, 4, 1, 67, 67, 16, 13, 3),         # GQA 4:1, ties, batch 2
    (1, 6, 2, 67, 67, 16, 13, 0),         # G = 3 (not a power of two)
    (1, 4, 2, 130, 130, 16, 13, 1),       # heavy ties
    (1, 2, 1, 130, 130, 64, 40, 0),
    (1, 4, 1, 20, 67, 16, 13, 0),         # Q < K (chunked prefill)
    (1, 4, 2, 1, 130, 32, 13, 2),         # Q = 1 (decoding)
    (1, 4, 2, 67, 67, 16, 40, 2),         # 2w >= K: no lists, every past key with the e test
    (1, 4, 1, 20, 67, 16, 34, 0),         # the same with Q < K
    (1, 2, 2, 67, 67, 16, 67, 0),         # w = K: dense path
    (1, 4, 1, 30, 130, 16, 500, 0),       # w > K, Q < K: dense path
]


@pytest.mark.parametrize("B,Hq,Hkv,Q,K,D,w,ties", ROW_CASES)
def test_row_causal(B, Hq, Hkv, Q, K, D, w, ties):
    check_against_naive(*make_inputs(B, Hq, Hkv, Q, K, D, ties=ties), w)


@pytest.mark.parametrize("B,Hq,Hkv,Q,K,D,w,ties", [
    (1, 4, 1, 67, 67, 16, 13, 0),
    (1, 3, 3, 130, 130, 16, 5, 3),
    (1, 4, 2, 17, 67, 32, 13, 0),
    (1, 2, 1, 1, 67, 16, 1, 0),
    (1, 2, 1, 40, 40, 16, 64, 0),
    (1, 4, 2, 67, 67, 16, 50, 1),         # 2w >= K: no lists
    (2, 4, 2, 67, 67, 16, 13, 2),         # GQA, batch 2, ties
])
def test_global_causal(B, Hq, Hkv, Q, K, D, w, ties):
    _o, _lse = check_against_naive(*make_inputs(B, Hq, Hkv, Q, K, D, ties=ties), w, mode="global")


def test_global_empty_rows_are_zero_not_nan():
    """Global mode keeps only the w best keys of all K: early rows can keep nothing."""
    q, k, v, s = make_inputs(1, 2, 1, 40, 40, 16)
    s[..., :20] -= 100.0                                # the top-w set lies in the second half
    o, lse = check_against_naive(q, k, v, s, 5, mode="global")
    assert (lse[..., :20] == -math.inf).all()
    assert (o[..., :20, :] == 0).all()


@pytest.mark.parametrize("mode", ["row", "global"])
@pytest.mark.parametrize("Q,K,w", [(67, 67, 13), (17, 67, 1), (1, 130, 20), (30, 30, 64)])
def test_non_causal(mode, Q, K, w):
    check_against_naive(*make_inputs(2, 4, 2, Q, K, 16, ties=2), w, causal=False, mode=mode)


def test_scale_and_minus_inf_scores():
    q, k, v, s = make_inputs(1, 2, 1, 67, 67, 16)
    s[..., 1::7] = -math.inf                            # allowed: such keys get zero weight
    s[..., 0] = -math.inf                               # row 0 keeps only key 0: an empty row
    o, lse = check_against_naive(q, k, v, s, 13, scale=0.3)
    assert (lse[..., 0] == -math.inf).all() and (o[..., 0, :] == 0).all()


@pytest.mark.parametrize("D", [128, 256])
def test_large_head_dims(D):
    check_against_naive(*make_inputs(1, 2, 1, 33, 33, D), 9)


@pytest.mark.parametrize("D,Q,K,w,mode", [
    (8, 33, 33, 9, "row"),                 # padded to 16 (tl.dot's minimum)
    (24, 20, 41, 9, "row"),                # padded to 32, Q < K
    (80, 33, 33, 40, "row"),               # 2w >= K: the list-free path
    (96, 17, 17, 30, "row"),               # w >= K: the dense path
    (40, 33, 33, 7, "global"),
])
def test_head_dims_that_are_not_powers_of_two(D, Q, K, w, mode):
    """Any multiple of 8 up to 256: the kernels pad D to a power of two inside and must neither
    read nor write the padding (q, k, v are not copied). GQA 4:2 with ties."""
    check_against_naive(*make_inputs(1, 4, 2, Q, K, D, ties=2), w, mode=mode)


@pytest.mark.parametrize("D", [160, 192])
def test_wide_head_dims_that_are_not_powers_of_two(D):
    check_against_naive(*make_inputs(1, 2, 1, 20, 20, D), 6)


def test_deterministic_backward_with_a_padded_head_dim():
    cfg = KernelConfig(rows=32, block_n=16, num_warps=4, num_stages=1)
    check_against_naive(*make_inputs(1, 4, 2, 30, 30, 24, ties=2), 7, bwd_config=cfg,
                        deterministic=True)


def test_unchecked_nan_and_inf_scores_give_nan_rows_not_plausible_values():
    """With ``check_values=False`` (the CUDA default: no host sync) a NaN or +inf score ranks
    first, so every row that can see the key is NaN; rows before it stay exact."""
    q, k, v, s = make_inputs(1, 2, 1, 40, 40, 16)
    ref = dma_attention(q, k, v, s, 5)
    for bad in (math.nan, math.inf):
        s_bad = s.clone()
        s_bad[0, 0, 25] = bad
        with pytest.raises(ValueError, match="s contains"):
            dma_attention(q, k, v, s_bad, 5)               # checked by default on the CPU
        o = dma_attention(q, k, v, s_bad, 5, check_values=False)
        assert torch.isnan(o[..., 25:, :]).all(dim=-1).all()
        torch.testing.assert_close(o[..., :25, :], ref[..., :25, :], rtol=0, atol=0)
    with pytest.raises(TypeError, match="check_values"):
        dma_attention(q, k, v, s, 5, check_values=1)


@pytest.mark.parametrize("fwd,bwd", [
    (KernelConfig(rows=16, block_n=16, max_heads=2), KernelConfig(rows=64, block_n=32)),
    (KernelConfig(rows=64, block_n=64, max_heads=1), KernelConfig(rows=16, block_n=16, max_heads=1)),
])
@pytest.mark.parametrize("Q,K", [(67, 67), (29, 100)])
def test_block_configs(fwd, bwd, Q, K):
    """Other tile shapes, head groups split across programs (max_heads < G) and a backward whose
    query blocks differ from the forward's (the key lists are rebuilt), also with Q < K."""
    check_against_naive(*make_inputs(1, 4, 1, Q, K, 16, ties=2), 13, fwd_config=fwd,
                        bwd_config=bwd)


def test_longer_sequence():
    check_against_naive(*make_inputs(1, 4, 2, 512, 512, 32, ties=3), 64)


def test_dma_attention_is_causal_in_row_mode():
    """Changing the future (k, v, s after position t) leaves rows <= t unchanged."""
    q, k, v, s = make_inputs(1, 2, 1, 67, 67, 16)
    o = dma_attention(q, k, v, s, 9)
    k2, v2, s2 = k.clone(), v.clone(), s.clone()
    k2[..., 40:, :] += 1.0
    v2[..., 40:, :] -= 2.0
    s2[..., 40:] += 5.0
    o2 = dma_attention(q, k2, v2, s2, 9)
    torch.testing.assert_close(o2[..., :40, :], o[..., :40, :], rtol=0, atol=0)
    assert (o2[..., 40:, :] - o[..., 40:, :]).abs().max() > 1e-2


@pytest.mark.parametrize("kwargs,exc,words", [
    ({"dtype": torch.float64}, TypeError, "float64"),
    ({"D": 20}, ValueError, "D=20"),               # not a multiple of 8
    ({"D": 264}, ValueError, "D=264"),             # over 256
    ({"Q": 10, "K": 5}, ValueError, "Q <= K"),
    ({"w": 0}, ValueError, "window"),
    ({"mode": "rows"}, ValueError, "mode"),
    ({"s_shape": (1, 2, 5)}, ValueError, "s must have shape"),
    ({"Hq": 3, "Hkv": 2}, ValueError, "multiple"),
])
def test_errors(kwargs, exc, words):
    B, Hq, Hkv = 1, kwargs.get("Hq", 2), kwargs.get("Hkv", 1)
    Q, K, D = kwargs.get("Q", 8), kwargs.get("K", 8), kwargs.get("D", 16)
    dtype = kwargs.get("dtype", torch.float32)
    q, k, v, s = make_inputs(B, Hq, Hkv, Q, K, D, dtype=dtype)
    if "s_shape" in kwargs:
        s = torch.randn(*kwargs["s_shape"])
    with pytest.raises(exc, match=words):
        dma_attention(q, k, v, s, kwargs.get("w", 4), mode=kwargs.get("mode", "row"))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("Q,K", [(67, 67), (1, 130)])
def test_fp16_within_twice_the_naive_error(Q, K):
    """fp16 (the interpreter's fp16 dot is right): the fp32 copy of o for Delta and the fp32 dS
    path of the backward. Errors against float64 at most 2x those of naive DMA run in fp16."""
    q, k, v, s = make_inputs(1, 4, 2, Q, K, 32, dtype=torch.float16)
    do = torch.randn(1, 4, Q, 32).half()

    def run(fn, inputs, do):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        o = fn(*leaves, 13)
        return [o, *torch.autograd.grad(o, leaves, do)]

    ref = run(naive_dma_attention, [t.double() for t in (q, k, v, s)], do.double())
    low = run(naive_dma_attention, [q, k, v, s], do)
    got = run(dma_attention, [q, k, v, s], do)
    for name, g, n, r in zip(("o", "dq", "dk", "dv", "ds"), got, low, ref):
        assert g.dtype == torch.float16
        assert rel_err(g, r) <= 2 * rel_err(n, r), name


# (B, Hq, Hkv, Q, K, D, w, causal, mode, max_heads): every plan kind the sparse backward sees,
# and GQA split over several programs (max_heads < G) so that a key gets rows from each.
DETERMINISTIC_CASES = [
    (1, 4, 1, 67, 67, 16, 13, True, "row", 4),
    (2, 6, 2, 67, 67, 16, 5, True, "row", 2),        # G = 3 over two head groups
    (1, 4, 2, 20, 67, 16, 13, True, "row", 4),       # Q < K
    (1, 2, 1, 1, 40, 16, 7, True, "row", 4),         # Q = 1
    (1, 4, 1, 50, 50, 16, 9, True, "global", 4),
    (1, 4, 2, 40, 40, 16, 9, False, "row", 4),       # non-causal: one shared list
    (1, 4, 2, 40, 40, 16, 30, True, "row", 4),       # 2w >= K: lists kept for the fixed order
]


@pytest.mark.parametrize("B,Hq,Hkv,Q,K,D,w,causal,mode,max_heads", DETERMINISTIC_CASES)
def test_deterministic_backward(B, Hq, Hkv, Q, K, D, w, causal, mode, max_heads):
    """The fixed-order path against float64, and against itself bit for bit."""
    cfg = KernelConfig(rows=32, block_n=16, num_warps=4, num_stages=1, max_heads=max_heads)
    inputs = make_inputs(B, Hq, Hkv, Q, K, D, ties=2)
    check_against_naive(*inputs, w, causal=causal, mode=mode, bwd_config=cfg, deterministic=True)
    runs = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        o = dma_attention(*leaves, w, causal=causal, mode=mode, bwd_config=cfg, deterministic=True)
        runs.append(torch.autograd.grad(o, leaves, torch.ones_like(o)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_deterministic_needs_a_sparse_window():
    with pytest.raises(ValueError, match="deterministic"):
        dma_attention(*make_inputs(1, 2, 1, 10, 10, 16), 10, deterministic=True)
    with pytest.raises(TypeError, match="deterministic"):
        dma_attention(*make_inputs(1, 2, 1, 10, 10, 16), 3, deterministic=1)


@pytest.mark.parametrize("mode,Q,K,w,deterministic", [("row", 67, 67, 13, False), ("global", 40, 67, 5, False),
                                                      ("row", 1, 130, 20, False), ("row", 67, 67, 13, True)])
@pytest.mark.parametrize("use_o", [True, False])
def test_lse_is_differentiable(mode, Q, K, w, deterministic, use_o):
    """A loss on lse (as in a softmax-normaliser regulariser) sends gradients through the kernel
    exactly as through the reference; global mode adds empty rows (lse = -inf)."""
    q, k, v, s = make_inputs(1, 4, 2, Q, K, 16, ties=2)
    def loss(o, lse, g_o, g_l):
        lse_fin = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        return (lse_fin * g_l).sum() + ((o * g_o).sum() if use_o else 0)   # without o: dO is None
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, s)]
    o, lse = dma_attention(*leaves, w, mode=mode, return_lse=True, deterministic=deterministic)
    g_o, g_l = torch.randn_like(o), torch.randn_like(lse)
    grads = torch.autograd.grad(loss(o, lse, g_o, g_l), leaves)
    ref = [t.double().requires_grad_(True) for t in (q, k, v, s)]
    o_r, lse_r = naive_dma_attention(*ref, w, mode=mode, return_lse=True)
    want = torch.autograd.grad(loss(o_r, lse_r, g_o.double(), g_l.double()), ref, allow_unused=True)
    want = [torch.zeros_like(r) if w_ is None else w_ for r, w_ in zip(ref, want)]   # lse ignores v
    for name, g, g_ref in zip(("dq", "dk", "dv", "ds"), grads, want):
        assert not torch.isnan(g).any(), name
        torch.testing.assert_close(g.double(), g_ref, atol=ATOL, rtol=RTOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("s_dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_scores_in_another_dtype_than_q(s_dtype):
    """The kernels read s in its own dtype (no fp32 copy); ds comes back in s's dtype."""
    q, k, v, s = make_inputs(1, 4, 2, 40, 40, 16, ties=2)
    s = s.to(s_dtype)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, s)]
    o = dma_attention(*leaves, 7)
    do = torch.randn_like(o)
    grads = torch.autograd.grad(o, leaves, do)
    ref = [t.double().requires_grad_(True) for t in (q, k, v, s)]
    ref_grads = torch.autograd.grad(naive_dma_attention(*ref, 7), ref, do.double())
    torch.testing.assert_close(o.double(), naive_dma_attention(*[t.double() for t in (q, k, v, s)], 7),
                               atol=ATOL, rtol=RTOL)
    assert grads[3].dtype == s_dtype
    for g, g_ref in zip(grads[:3], ref_grads[:3]):
        torch.testing.assert_close(g.double(), g_ref, atol=ATOL, rtol=RTOL)
    # ds is rounded to s's dtype at the end: 8 (bf16) or 11 (fp16) significant bits, ~4e-3.
    low = s_dtype != torch.float64
    torch.testing.assert_close(grads[3].double(), ref_grads[3], atol=1e-2 if low else ATOL,
                               rtol=1e-2 if low else RTOL)


@pytest.mark.parametrize("B,Hq,Hkv,Q,K,D,w", [(1, 4, 2, 70, 70, 16, 9), (1, 2, 1, 40, 90, 24, 30),
                                             (1, 4, 2, 50, 50, 16, 50)])
def test_lazy_rescaling_forward(monkeypatch, B, Hq, Hkv, Q, K, D, w):
    """The forward with lazy rescaling (``forward.LAZY_RESCALE``): sparse, Q < K and dense;
    scores spread over ~12 units so that rows move their maximum (and skip it) many times."""
    import dma_ref.kernels.forward as forward_mod

    monkeypatch.setattr(forward_mod, "LAZY_RESCALE", True)
    q, k, v, s = make_inputs(B, Hq, Hkv, Q, K, D)
    check_against_naive(q * 3, k, v, s * 4, w)
