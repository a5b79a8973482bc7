"""Plausible wrong kernels and bypasses for the Triton primer's puzzles: every checker must
reject each of them (tests/test_checkers_primer.py)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from dma_ref.kernels.tiles import keep_pairs as package_keep

from dma_ref.check.primer import spec_row_softmax as my_softmax

SOME_ROWS = torch.ones(2, 3)


@triton.jit
def scale_add_no_mask(x_ptr, y_ptr, z_ptr, a, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(z_ptr + offs, a * tl.load(x_ptr + offs) + tl.load(y_ptr + offs))


@triton.jit
def scale_add_first_block_only(x_ptr, y_ptr, z_ptr, a, N, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)                       # forgets tl.program_id
    ok = offs < N
    tl.store(z_ptr + offs, a * tl.load(x_ptr + offs, mask=ok) + tl.load(y_ptr + offs, mask=ok),
             mask=ok)


@triton.jit
def add_row_contiguous(x_ptr, b_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
                       BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    ok = (i[:, None] < M) & (j[None, :] < N)
    x = tl.load(x_ptr + i[:, None] * N + j[None, :], mask=ok)          # assumes row-major x
    b = tl.load(b_ptr + j, mask=j < N)
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, x + b[None, :], mask=ok)


@triton.jit
def add_row_row_mask_only(x_ptr, b_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
                          BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    ok = (i[:, None] < M) & (j[None, :] < BN * tl.num_programs(1))    # no column edge
    x = tl.load(x_ptr + i[:, None] * stride_xm + j[None, :] * stride_xn, mask=ok)
    b = tl.load(b_ptr + j, mask=j < N)
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, x + b[None, :], mask=ok)


@triton.jit
def row_sums_no_column_mask(x_ptr, z_ptr, M, N, stride_xm, stride_xn, BM: tl.constexpr,
                            BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    acc = tl.zeros([BM], tl.float32)
    for start in range(0, N, BN):
        j = start + tl.arange(0, BN)
        acc += tl.sum(tl.load(x_ptr + i[:, None] * stride_xm + j[None, :] * stride_xn,
                              mask=i[:, None] < M, other=0.0), axis=1)
    tl.store(z_ptr + i, acc, mask=i < M)


@triton.jit
def row_sums_one_tile(x_ptr, z_ptr, M, N, stride_xm, stride_xn, BM: tl.constexpr,
                      BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.arange(0, BN)                                               # no loop over the row
    ok = (i[:, None] < M) & (j[None, :] < N)
    x = tl.load(x_ptr + i[:, None] * stride_xm + j[None, :] * stride_xn, mask=ok, other=0.0)
    tl.store(z_ptr + i, tl.sum(x, axis=1), mask=i < M)


@triton.jit
def softmax_other_zero(x_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
                       BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.arange(0, BN)
    ok = (i[:, None] < M) & (j[None, :] < N)
    x = tl.load(x_ptr + i[:, None] * stride_xm + j[None, :] * stride_xn, mask=ok, other=0.0)
    p = tl.exp(x - tl.max(x, axis=1)[:, None])
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn,
             p / tl.sum(p, axis=1)[:, None], mask=ok)


@triton.jit
def softmax_no_max(x_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
                   BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.arange(0, BN)
    ok = (i[:, None] < M) & (j[None, :] < N)
    x = tl.load(x_ptr + i[:, None] * stride_xm + j[None, :] * stride_xn, mask=ok,
                other=float("-inf"))
    p = tl.exp(x)
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn,
             p / tl.sum(p, axis=1)[:, None], mask=ok)


@triton.jit
def softmax_by_torch(x_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
                     BM: tl.constexpr, BN: tl.constexpr):
    torch.softmax(torch.zeros(3), 0)                                   # torch doing the work


@triton.jit
def softmax_by_package_spec(x_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
                            BM: tl.constexpr, BN: tl.constexpr):
    my_softmax(SOME_ROWS)                                              # the spec, aliased


class NotAKernel:
    """Indexable like a kernel, but plain PyTorch on the tensors it gets."""

    def __getitem__(self, grid):
        def run(x, z, M, N, *strides, **constexprs):
            z.copy_(torch.softmax(x, 1))
        return run


@triton.jit
def matmul_no_k_mask(x_ptr, y_ptr, z_ptr, M, N, K, stride_xm, stride_xk, stride_yk, stride_yn,
                     stride_zm, stride_zn, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    acc = tl.zeros([BM, BN], tl.float32)
    for start in range(0, K, BK):
        r = start + tl.arange(0, BK)
        x = tl.load(x_ptr + i[:, None] * stride_xm + r[None, :] * stride_xk,
                    mask=i[:, None] < M, other=0.0)
        y = tl.load(y_ptr + r[:, None] * stride_yk + j[None, :] * stride_yn,
                    mask=j[None, :] < N, other=0.0)
        acc += tl.dot(x, y)
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, acc,
             mask=(i[:, None] < M) & (j[None, :] < N))


@triton.jit
def matmul_overwrites(x_ptr, y_ptr, z_ptr, M, N, K, stride_xm, stride_xk, stride_yk, stride_yn,
                      stride_zm, stride_zn, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    acc = tl.zeros([BM, BN], tl.float32)
    for start in range(0, K, BK):
        r = start + tl.arange(0, BK)
        x = tl.load(x_ptr + i[:, None] * stride_xm + r[None, :] * stride_xk,
                    mask=(i[:, None] < M) & (r[None, :] < K), other=0.0)
        y = tl.load(y_ptr + r[:, None] * stride_yk + j[None, :] * stride_yn,
                    mask=(r[:, None] < K) & (j[None, :] < N), other=0.0)
        acc = tl.dot(x, y)                                             # = instead of +=
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, acc,
             mask=(i[:, None] < M) & (j[None, :] < N))


@triton.jit
def causal_top_left(q_ptr, k_ptr, s_ptr, z_ptr, Q, K, scale, stride_qm, stride_qd, stride_km,
                    stride_kd, stride_zm, stride_zn, D: tl.constexpr, BM: tl.constexpr,
                    BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + i[:, None] * stride_qm + d[None, :] * stride_qd, mask=i[:, None] < Q,
                other=0.0)
    kT = tl.load(k_ptr + j[None, :] * stride_km + d[:, None] * stride_kd, mask=j[None, :] < K,
                 other=0.0)
    x = scale * tl.dot(q, kT) + tl.load(s_ptr + j, mask=j < K, other=0.0)[None, :]
    x = tl.where(j[None, :] <= i[:, None], x, float("-inf"))           # forgets K - Q
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, x,
             mask=(i[:, None] < Q) & (j[None, :] < K))


@triton.jit
def causal_zero_fill(q_ptr, k_ptr, s_ptr, z_ptr, Q, K, scale, stride_qm, stride_qd, stride_km,
                     stride_kd, stride_zm, stride_zn, D: tl.constexpr, BM: tl.constexpr,
                     BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + i[:, None] * stride_qm + d[None, :] * stride_qd, mask=i[:, None] < Q,
                other=0.0)
    kT = tl.load(k_ptr + j[None, :] * stride_km + d[:, None] * stride_kd, mask=j[None, :] < K,
                 other=0.0)
    x = scale * tl.dot(q, kT) + tl.load(s_ptr + j, mask=j < K, other=0.0)[None, :]
    x = tl.where(j[None, :] <= (K - Q + i)[:, None], x, 0.0)          # 0 is not "masked"
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, x,
             mask=(i[:, None] < Q) & (j[None, :] < K))


@triton.jit
def causal_k_row_major(q_ptr, k_ptr, s_ptr, z_ptr, Q, K, scale, stride_qm, stride_qd, stride_km,
                       stride_kd, stride_zm, stride_zn, D: tl.constexpr, BM: tl.constexpr,
                       BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + i[:, None] * stride_qm + d[None, :] * stride_qd, mask=i[:, None] < Q,
                other=0.0)
    kT = tl.load(k_ptr + j[None, :] * stride_km + d[:, None], mask=j[None, :] < K,
                 other=0.0)                                            # assumes stride_kd = 1
    x = scale * tl.dot(q, kT) + tl.load(s_ptr + j, mask=j < K, other=0.0)[None, :]
    x = tl.where(j[None, :] <= (K - Q + i)[:, None], x, float("-inf"))
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, x,
             mask=(i[:, None] < Q) & (j[None, :] < K))


@triton.jit
def gathered_logits(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, Q, K, n, scale, stride_qm, stride_km,
                    i, c, D: tl.constexpr, MODE: tl.constexpr):
    """The tile of puzzle 7 for rows i and list slots c; MODE picks a wrong variant."""
    d = tl.arange(0, D)
    ok = c < n
    j = tl.load(idx_ptr + c, mask=ok, other=0)
    q = tl.load(q_ptr + i[:, None] * stride_qm + d[None, :], mask=i[:, None] < Q, other=0.0)
    k = tl.load(k_ptr + j[:, None] * stride_km + d[None, :], mask=ok[:, None], other=0.0)
    x = scale * tl.dot(q, tl.trans(k)) + tl.load(s_ptr + j, mask=ok, other=0.0)[None, :]
    e = tl.load(e_ptr + j, mask=ok, other=0)
    p = (K - Q + i)[:, None]
    if MODE == 0:
        keep = (j[None, :] <= p) & (p < e[None, :])
    elif MODE == 1:
        keep = j[None, :] <= p                                         # forgets the lifetimes
    elif MODE == 2:
        keep = (j[None, :] <= p) & (p <= e[None, :])                   # e_j is the first miss
    else:
        keep = (c[None, :] <= p) & (p < e[None, :])                    # list slot, not key id
    return tl.where(keep & ok[None, :], x, float("-inf"))


@triton.jit
def gathered_causal_only(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, z_ptr, Q, K, n, scale, stride_qm,
                         stride_km, stride_zm, D: tl.constexpr, BM: tl.constexpr,
                         BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    c = tl.program_id(1) * BN + tl.arange(0, BN)
    x = gathered_logits(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, Q, K, n, scale, stride_qm,
                        stride_km, i, c, D, 1)
    tl.store(z_ptr + i[:, None] * stride_zm + c[None, :], x,
             mask=(i[:, None] < Q) & (c[None, :] < n))


@triton.jit
def gathered_inclusive_end(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, z_ptr, Q, K, n, scale,
                           stride_qm, stride_km, stride_zm, D: tl.constexpr, BM: tl.constexpr,
                           BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    c = tl.program_id(1) * BN + tl.arange(0, BN)
    x = gathered_logits(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, Q, K, n, scale, stride_qm,
                        stride_km, i, c, D, 2)
    tl.store(z_ptr + i[:, None] * stride_zm + c[None, :], x,
             mask=(i[:, None] < Q) & (c[None, :] < n))


@triton.jit
def gathered_slot_not_key(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, z_ptr, Q, K, n, scale, stride_qm,
                          stride_km, stride_zm, D: tl.constexpr, BM: tl.constexpr,
                          BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    c = tl.program_id(1) * BN + tl.arange(0, BN)
    x = gathered_logits(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, Q, K, n, scale, stride_qm,
                        stride_km, i, c, D, 3)
    tl.store(z_ptr + i[:, None] * stride_zm + c[None, :], x,
             mask=(i[:, None] < Q) & (c[None, :] < n))


@triton.jit
def gathered_by_package(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, z_ptr, Q, K, n, scale, stride_qm,
                        stride_km, stride_zm, D: tl.constexpr, BM: tl.constexpr,
                        BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    c = tl.program_id(1) * BN + tl.arange(0, BN)
    d = tl.arange(0, D)
    ok = c < n
    j = tl.load(idx_ptr + c, mask=ok, other=0)
    q = tl.load(q_ptr + i[:, None] * stride_qm + d[None, :], mask=i[:, None] < Q, other=0.0)
    k = tl.load(k_ptr + j[:, None] * stride_km + d[None, :], mask=ok[:, None], other=0.0)
    x = scale * tl.dot(q, tl.trans(k)) + tl.load(s_ptr + j, mask=ok, other=0.0)[None, :]
    x = package_keep(x, j, ok, K - Q + i, e_ptr, 0, True, True, True)   # the package's test
    tl.store(z_ptr + i[:, None] * stride_zm + c[None, :], x,
             mask=(i[:, None] < Q) & (c[None, :] < n))


@triton.jit
def attention_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n, scale,
                   stride_qm, stride_km, stride_vm, stride_om, D: tl.constexpr, BM: tl.constexpr,
                   BN: tl.constexpr, MODE: tl.constexpr):
    """Puzzle 8 for this program's rows; MODE picks a wrong variant (0 = right)."""
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    p = (K - Q + i)[:, None]
    d = tl.arange(0, D)
    q = tl.load(q_ptr + i[:, None] * stride_qm + d[None, :], mask=i[:, None] < Q, other=0.0)
    m = tl.full([BM], float("-inf"), tl.float32)
    l = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    for c0 in range(0, n, BN):
        c = c0 + tl.arange(0, BN)
        ok = c < n
        if MODE == 3:
            ok = c < n + BN                                            # no mask at the list's end
        j = tl.load(idx_ptr + c, mask=ok, other=0)
        k = tl.load(k_ptr + j[:, None] * stride_km + d[None, :], mask=ok[:, None], other=0.0)
        v = tl.load(v_ptr + j[:, None] * stride_vm + d[None, :], mask=ok[:, None], other=0.0)
        e = tl.load(e_ptr + j, mask=ok, other=0)
        x = scale * tl.dot(q, tl.trans(k)) + tl.load(s_ptr + j, mask=ok, other=0.0)[None, :]
        keep = ok[None, :] & (j[None, :] <= p) & (p < e[None, :])
        x = tl.where(keep, x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        if MODE == 1:
            m_ref = m_new                                              # exp(-inf - -inf) = NaN
        alpha = tl.exp(m - m_ref)
        if MODE == 2:
            alpha = tl.full([BM], 1.0, tl.float32)                     # forgets to rescale
        P = tl.exp(x - m_ref[:, None])
        l = alpha * l + tl.sum(P, axis=1)
        acc = alpha[:, None] * acc + tl.dot(P, v)
        m = m_new
    empty = l == 0.0
    o = acc / tl.where(empty, 1.0, l)[:, None]
    lse = tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, l)))
    tl.store(o_ptr + i[:, None] * stride_om + d[None, :], o, mask=i[:, None] < Q)
    tl.store(lse_ptr + i, lse, mask=i < Q)


@triton.jit
def attention_nan_rows(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n,
                       scale, stride_qm, stride_km, stride_vm, stride_om, D: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr):
    attention_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n, scale,
                   stride_qm, stride_km, stride_vm, stride_om, D, BM, BN, 1)


@triton.jit
def attention_no_rescale(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n,
                         scale, stride_qm, stride_km, stride_vm, stride_om, D: tl.constexpr,
                         BM: tl.constexpr, BN: tl.constexpr):
    attention_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n, scale,
                   stride_qm, stride_km, stride_vm, stride_om, D, BM, BN, 2)


@triton.jit
def attention_no_list_mask(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n,
                           scale, stride_qm, stride_km, stride_vm, stride_om, D: tl.constexpr,
                           BM: tl.constexpr, BN: tl.constexpr):
    attention_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n, scale,
                   stride_qm, stride_km, stride_vm, stride_om, D, BM, BN, 3)


@triton.jit
def attention_by_torch(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n,
                       scale, stride_qm, stride_km, stride_vm, stride_om, D: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr):
    torch.logsumexp(torch.zeros(2, 2), 1)
    attention_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n, scale,
                   stride_qm, stride_km, stride_vm, stride_om, D, BM, BN, 0)
