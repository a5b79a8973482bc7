"""Reference solutions of the Triton primer's puzzles (and the notebook's stubs), kept beside
the tests: the package ships only the checkers and the specs (``dma_ref.check.primer``)."""

from __future__ import annotations

import triton
import triton.language as tl


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


@triton.jit
def scale_add_ok(x_ptr, y_ptr, z_ptr, a, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    x = tl.load(x_ptr + offs, mask=ok)
    y = tl.load(y_ptr + offs, mask=ok)
    tl.store(z_ptr + offs, a * x + y, mask=ok)


@triton.jit
def add_row_ok(x_ptr, b_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
               BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    ok = (i[:, None] < M) & (j[None, :] < N)
    x = tl.load(x_ptr + i[:, None] * stride_xm + j[None, :] * stride_xn, mask=ok)
    b = tl.load(b_ptr + j, mask=j < N)
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, x + b[None, :], mask=ok)


@triton.jit
def row_sums_ok(x_ptr, z_ptr, M, N, stride_xm, stride_xn, BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    acc = tl.zeros([BM], tl.float32)
    for start in range(0, N, BN):
        j = start + tl.arange(0, BN)
        ok = (i[:, None] < M) & (j[None, :] < N)
        acc += tl.sum(tl.load(x_ptr + i[:, None] * stride_xm + j[None, :] * stride_xn, mask=ok,
                              other=0.0), axis=1)
    tl.store(z_ptr + i, acc, mask=i < M)


@triton.jit
def softmax_ok(x_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
               BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.arange(0, BN)
    ok = (i[:, None] < M) & (j[None, :] < N)
    x = tl.load(x_ptr + i[:, None] * stride_xm + j[None, :] * stride_xn, mask=ok,
                other=float("-inf"))
    p = tl.exp(x - tl.max(x, axis=1)[:, None])
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn,
             p / tl.sum(p, axis=1)[:, None], mask=ok)


@triton.jit
def matmul_ok(x_ptr, y_ptr, z_ptr, M, N, K, stride_xm, stride_xk, stride_yk, stride_yn,
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
        acc += tl.dot(x, y)
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, acc,
             mask=(i[:, None] < M) & (j[None, :] < N))


@triton.jit
def causal_ok(q_ptr, k_ptr, s_ptr, z_ptr, Q, K, scale, stride_qm, stride_qd, stride_km, stride_kd,
              stride_zm, stride_zn, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    j = tl.program_id(1) * BN + tl.arange(0, BN)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + i[:, None] * stride_qm + d[None, :] * stride_qd, mask=i[:, None] < Q,
                other=0.0)
    kT = tl.load(k_ptr + j[None, :] * stride_km + d[:, None] * stride_kd, mask=j[None, :] < K,
                 other=0.0)
    x = scale * tl.dot(q, kT) + tl.load(s_ptr + j, mask=j < K, other=0.0)[None, :]
    x = tl.where(j[None, :] <= (K - Q + i)[:, None], x, float("-inf"))
    tl.store(z_ptr + i[:, None] * stride_zm + j[None, :] * stride_zn, x,
             mask=(i[:, None] < Q) & (j[None, :] < K))


@triton.jit
def gathered_ok(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, z_ptr, Q, K, n, scale, stride_qm,
                stride_km, stride_zm, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    i = tl.program_id(0) * BM + tl.arange(0, BM)
    c = tl.program_id(1) * BN + tl.arange(0, BN)
    d = tl.arange(0, D)
    ok = c < n
    j = tl.load(idx_ptr + c, mask=ok, other=0)                    # the gathered key ids
    q = tl.load(q_ptr + i[:, None] * stride_qm + d[None, :], mask=i[:, None] < Q, other=0.0)
    k = tl.load(k_ptr + j[:, None] * stride_km + d[None, :], mask=ok[:, None], other=0.0)
    x = scale * tl.dot(q, tl.trans(k)) + tl.load(s_ptr + j, mask=ok, other=0.0)[None, :]
    e = tl.load(e_ptr + j, mask=ok, other=0)
    p = (K - Q + i)[:, None]
    keep = ok[None, :] & (j[None, :] <= p) & (p < e[None, :])
    tl.store(z_ptr + i[:, None] * stride_zm + c[None, :], tl.where(keep, x, float("-inf")),
             mask=(i[:, None] < Q) & ok[None, :])


@triton.jit
def attention_ok(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n, scale,
                 stride_qm, stride_km, stride_vm, stride_om, D: tl.constexpr, BM: tl.constexpr,
                 BN: tl.constexpr):
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
        j = tl.load(idx_ptr + c, mask=ok, other=0)
        k = tl.load(k_ptr + j[:, None] * stride_km + d[None, :], mask=ok[:, None], other=0.0)
        v = tl.load(v_ptr + j[:, None] * stride_vm + d[None, :], mask=ok[:, None], other=0.0)
        e = tl.load(e_ptr + j, mask=ok, other=0)
        x = scale * tl.dot(q, tl.trans(k)) + tl.load(s_ptr + j, mask=ok, other=0.0)[None, :]
        x = tl.where(ok[None, :] & (j[None, :] <= p) & (p < e[None, :]), x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)       # no exp(-inf - (-inf))
        alpha = tl.exp(m - m_ref)
        P = tl.exp(x - m_ref[:, None])
        l = alpha * l + tl.sum(P, axis=1)
        acc = alpha[:, None] * acc + tl.dot(P, v)
        m = m_new
    empty = l == 0.0
    o = acc / tl.where(empty, 1.0, l)[:, None]
    lse = tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, l)))
    tl.store(o_ptr + i[:, None] * stride_om + d[None, :], o, mask=i[:, None] < Q)
    tl.store(lse_ptr + i, lse, mask=i < Q)
