"""The Triton primer's puzzle stubs (as the notebook shows them) and its solutions, which are
the solved notebook's own (course/source/05_triton_primer.ipynb, through
``dma_ref.course.solutions``): each kernel is written once, there."""

from __future__ import annotations

import triton
import triton.language as tl

from dma_ref.course import solutions

_S05 = solutions("05")
scale_add_ok = _S05.scale_add_kernel
add_row_ok = _S05.add_row_kernel
row_sums_ok = _S05.row_sums_kernel
softmax_ok = _S05.row_softmax_kernel
matmul_ok = _S05.matmul_kernel
causal_ok = _S05.causal_logits_kernel
gathered_ok = _S05.gathered_logits_kernel
attention_ok = _S05.gathered_attention_kernel


@triton.jit
def stub_1(x_ptr, y_ptr, z_ptr, a, N, BLOCK: tl.constexpr):
    pass


@triton.jit
def stub_2(x_ptr, b_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
           BM: tl.constexpr, BN: tl.constexpr):
    pass


@triton.jit
def stub_3(x_ptr, z_ptr, M, N, stride_xm, stride_xn, BM: tl.constexpr, BN: tl.constexpr):
    pass


@triton.jit
def stub_4(x_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
           BM: tl.constexpr, BN: tl.constexpr):
    pass


@triton.jit
def stub_5(x_ptr, y_ptr, z_ptr, M, N, K, stride_xm, stride_xk, stride_yk, stride_yn,
           stride_zm, stride_zn, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pass


@triton.jit
def stub_6(q_ptr, k_ptr, s_ptr, z_ptr, Q, K, scale, stride_qm, stride_qd, stride_km, stride_kd,
           stride_zm, stride_zn, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    pass


@triton.jit
def stub_7(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, z_ptr, Q, K, n, scale, stride_qm, stride_km,
           stride_zm, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    pass


@triton.jit
def stub_8(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n, scale,
           stride_qm, stride_km, stride_vm, stride_om, D: tl.constexpr, BM: tl.constexpr,
           BN: tl.constexpr):
    raise NotImplementedError          # a stub may also raise: the checker sees through Triton
