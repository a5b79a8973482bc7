"""Stubs, plausible wrong kernels and bypasses of the Triton exercises of notebooks 06 (the DMA
forward over gathered unions) and 07 (the key-major dK, dV, ds pass), kept beside the tests: the
package ships only the checkers (``dma_ref.check.nb06``, ``nb07``). The solutions are written
once, in the solved notebooks (``dma_ref.course.solutions("06").dma_fwd_kernel``,
``solutions("07").key_major_kernel``)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from dma_ref.kernels import dma_attention as fast_attention
from dma_ref.kernels.tiles import keep_pairs as package_keep_pairs

from dma_ref import naive_dma_attention as reference_attention

# Tensors a bypass could reach from inside a kernel (the interpreter runs its body as Python).
SOME_Q, SOME_KV, SOME_S = torch.ones(1, 1, 4, 16), torch.ones(1, 1, 4, 16), torch.zeros(1, 1, 4)

# ------------------------------------------------------------------ notebook 06: the forward


@triton.jit
def fwd_stub(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
             Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
             BN: tl.constexpr):
    pass


@triton.jit
def fwd_top_left(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                 Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                 BN: tl.constexpr):
    # Rows at positions i instead of K - Q + i: wrong whenever Q < K.
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    G = Hq // Hkv
    bhk = (bh // Hq) * Hkv + (bh % Hq) // G
    i = qb * BM + tl.arange(0, BM)
    p = i
    d = tl.arange(0, D)
    row = i < Q
    q = tl.load(q_ptr + bh * Q * D + i[:, None] * D + d[None, :], mask=row[:, None], other=0.0)
    m = tl.full([BM], float("-inf"), tl.float32)
    l = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    start = tl.load(off_ptr + bhk * (n_blocks + 1) + qb)
    end = tl.load(off_ptr + bhk * (n_blocks + 1) + qb + 1)
    for c in range(start, end, BN):
        u = c + tl.arange(0, BN)
        valid = u < end
        j = tl.load(idx_ptr + u, mask=valid, other=0)
        kv = bhk * K * D + j[:, None] * D + d[None, :]
        k = tl.load(k_ptr + kv, mask=valid[:, None], other=0.0)
        v = tl.load(v_ptr + kv, mask=valid[:, None], other=0.0)
        s_j = tl.load(s_ptr + bhk * K + j, mask=valid, other=0.0)
        e_j = tl.load(e_ptr + bhk * K + j, mask=valid, other=0)
        x = tl.dot(q, tl.trans(k), input_precision="ieee") * scale + s_j[None, :]
        keep = valid[None, :] & (j[None, :] <= p[:, None]) & (p[:, None] < e_j[None, :])
        x = tl.where(keep, x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_ref)
        P = tl.exp(x - m_ref[:, None])
        l = alpha * l + tl.sum(P, 1)
        acc = acc * alpha[:, None] + tl.dot(P, v, input_precision="ieee")
        m = m_new
    empty = l == 0.0
    l_safe = tl.where(empty, 1.0, l)
    tl.store(o_ptr + bh * Q * D + i[:, None] * D + d[None, :], acc / l_safe[:, None],
             mask=row[:, None])
    tl.store(lse_ptr + bh * Q + i, tl.where(empty, float("-inf"), m + tl.log(l_safe)), mask=row)


@triton.jit
def fwd_interleaved_heads(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                          Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                          BN: tl.constexpr):
    # Query head h read from KV head h % Hkv (interleaved) instead of h // G (grouped).
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    bhk = (bh // Hq) * Hkv + (bh % Hq) % Hkv
    i = qb * BM + tl.arange(0, BM)
    p = K - Q + i
    d = tl.arange(0, D)
    row = i < Q
    q = tl.load(q_ptr + bh * Q * D + i[:, None] * D + d[None, :], mask=row[:, None], other=0.0)
    m = tl.full([BM], float("-inf"), tl.float32)
    l = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    start = tl.load(off_ptr + bhk * (n_blocks + 1) + qb)
    end = tl.load(off_ptr + bhk * (n_blocks + 1) + qb + 1)
    for c in range(start, end, BN):
        u = c + tl.arange(0, BN)
        valid = u < end
        j = tl.load(idx_ptr + u, mask=valid, other=0)
        kv = bhk * K * D + j[:, None] * D + d[None, :]
        k = tl.load(k_ptr + kv, mask=valid[:, None], other=0.0)
        v = tl.load(v_ptr + kv, mask=valid[:, None], other=0.0)
        s_j = tl.load(s_ptr + bhk * K + j, mask=valid, other=0.0)
        e_j = tl.load(e_ptr + bhk * K + j, mask=valid, other=0)
        x = tl.dot(q, tl.trans(k), input_precision="ieee") * scale + s_j[None, :]
        keep = valid[None, :] & (j[None, :] <= p[:, None]) & (p[:, None] < e_j[None, :])
        x = tl.where(keep, x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_ref)
        P = tl.exp(x - m_ref[:, None])
        l = alpha * l + tl.sum(P, 1)
        acc = acc * alpha[:, None] + tl.dot(P, v, input_precision="ieee")
        m = m_new
    empty = l == 0.0
    l_safe = tl.where(empty, 1.0, l)
    tl.store(o_ptr + bh * Q * D + i[:, None] * D + d[None, :], acc / l_safe[:, None],
             mask=row[:, None])
    tl.store(lse_ptr + bh * Q + i, tl.where(empty, float("-inf"), m + tl.log(l_safe)), mask=row)


@triton.jit
def fwd_no_nan_guard(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                     Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                     BN: tl.constexpr):
    # exp(m - m_new) with m = m_new = -inf (a chunk a row keeps nothing of): NaN.
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    G = Hq // Hkv
    bhk = (bh // Hq) * Hkv + (bh % Hq) // G
    i = qb * BM + tl.arange(0, BM)
    p = K - Q + i
    d = tl.arange(0, D)
    row = i < Q
    q = tl.load(q_ptr + bh * Q * D + i[:, None] * D + d[None, :], mask=row[:, None], other=0.0)
    m = tl.full([BM], float("-inf"), tl.float32)
    l = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    start = tl.load(off_ptr + bhk * (n_blocks + 1) + qb)
    end = tl.load(off_ptr + bhk * (n_blocks + 1) + qb + 1)
    for c in range(start, end, BN):
        u = c + tl.arange(0, BN)
        valid = u < end
        j = tl.load(idx_ptr + u, mask=valid, other=0)
        kv = bhk * K * D + j[:, None] * D + d[None, :]
        k = tl.load(k_ptr + kv, mask=valid[:, None], other=0.0)
        v = tl.load(v_ptr + kv, mask=valid[:, None], other=0.0)
        s_j = tl.load(s_ptr + bhk * K + j, mask=valid, other=0.0)
        e_j = tl.load(e_ptr + bhk * K + j, mask=valid, other=0)
        x = tl.dot(q, tl.trans(k), input_precision="ieee") * scale + s_j[None, :]
        keep = valid[None, :] & (j[None, :] <= p[:, None]) & (p[:, None] < e_j[None, :])
        x = tl.where(keep, x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, 1))
        alpha = tl.exp(m - m_new)
        P = tl.exp(x - m_new[:, None])
        l = alpha * l + tl.sum(P, 1)
        acc = acc * alpha[:, None] + tl.dot(P, v, input_precision="ieee")
        m = m_new
    tl.store(o_ptr + bh * Q * D + i[:, None] * D + d[None, :], acc / l[:, None],
             mask=row[:, None])
    tl.store(lse_ptr + bh * Q + i, m + tl.log(l), mask=row)


@triton.jit
def fwd_unmasked_list(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                      Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                      BN: tl.constexpr):
    # The list's last chunk is read past its end (the next block's keys, or the padding).
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    G = Hq // Hkv
    bhk = (bh // Hq) * Hkv + (bh % Hq) // G
    i = qb * BM + tl.arange(0, BM)
    p = K - Q + i
    d = tl.arange(0, D)
    row = i < Q
    q = tl.load(q_ptr + bh * Q * D + i[:, None] * D + d[None, :], mask=row[:, None], other=0.0)
    m = tl.full([BM], float("-inf"), tl.float32)
    l = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    start = tl.load(off_ptr + bhk * (n_blocks + 1) + qb)
    end = tl.load(off_ptr + bhk * (n_blocks + 1) + qb + 1)
    for c in range(start, end, BN):
        u = c + tl.arange(0, BN)
        j = tl.load(idx_ptr + u)
        kv = bhk * K * D + j[:, None] * D + d[None, :]
        k = tl.load(k_ptr + kv)
        v = tl.load(v_ptr + kv)
        s_j = tl.load(s_ptr + bhk * K + j)
        e_j = tl.load(e_ptr + bhk * K + j)
        x = tl.dot(q, tl.trans(k), input_precision="ieee") * scale + s_j[None, :]
        keep = (j[None, :] <= p[:, None]) & (p[:, None] < e_j[None, :])
        x = tl.where(keep, x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_ref)
        P = tl.exp(x - m_ref[:, None])
        l = alpha * l + tl.sum(P, 1)
        acc = acc * alpha[:, None] + tl.dot(P, v, input_precision="ieee")
        m = m_new
    empty = l == 0.0
    l_safe = tl.where(empty, 1.0, l)
    tl.store(o_ptr + bh * Q * D + i[:, None] * D + d[None, :], acc / l_safe[:, None],
             mask=row[:, None])
    tl.store(lse_ptr + bh * Q + i, tl.where(empty, float("-inf"), m + tl.log(l_safe)), mask=row)


@triton.jit
def fwd_by_torch(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                 Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                 BN: tl.constexpr):
    # A bypass: the interpreter runs the body as Python, so it could call the reference.
    reference_attention(SOME_Q, SOME_KV, SOME_KV, SOME_S, 4)


@triton.jit
def fwd_by_package_op(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                      Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                      BN: tl.constexpr):
    # A bypass: the package's attention (its kernels behind an alias), from inside the kernel.
    fast_attention(SOME_Q, SOME_KV, SOME_KV, SOME_S, 4)


@triton.jit
def fwd_by_package_helper(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                          Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                          BN: tl.constexpr):
    # A bypass: the package's keep test under an alias.
    j = tl.arange(0, BN)
    p = tl.arange(0, BM)
    x = tl.zeros([BM, BN], tl.float32)
    package_keep_pairs(x, j, j >= 0, p, e_ptr, 0, True, True, True)


def fwd_package_kernel():
    """A bypass: the package's own kernel object passed as the learner's."""
    from dma_ref.kernels.forward import dma_fwd_kernel
    return dma_fwd_kernel

# ------------------------------------------------------------ notebook 07: key-major dK, dV, ds

# The mistakes of the wrong kernels below, as one body with a switch (0: none).
RIGHT, ONE_HEAD, ROWS_AS_POSITIONS, DELTA_FROM_TILE, NO_LSE_GUARD = 0, 1, 2, 3, 4


@triton.jit
def km_stub(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
            ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    pass


@triton.jit
def km_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
            ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
            MISTAKE: tl.constexpr):
    kb = tl.program_id(0)
    bhk = tl.program_id(1)                                   # (batch, KV head)
    G = Hq // Hkv
    j = kb * BN + tl.arange(0, BN)
    col = j < K
    d = tl.arange(0, D)
    kv = bhk * K * D + j[:, None] * D + d[None, :]
    k = tl.load(k_ptr + kv, mask=col[:, None], other=0.0)
    v = tl.load(v_ptr + kv, mask=col[:, None], other=0.0)
    s_j = tl.load(s_ptr + bhk * K + j, mask=col, other=0.0)
    e_j = tl.load(e_ptr + bhk * K + j, mask=col, other=0)
    # Key j is read by positions [j, e_j): rows [j - (K - Q), e_j - (K - Q)) of every head.
    if MISTAKE == ROWS_AS_POSITIONS:
        lo = kb * BN
        hi = tl.minimum(tl.max(e_j, 0), Q)
    else:
        lo = tl.maximum(kb * BN - (K - Q), 0)
        hi = tl.minimum(tl.max(e_j, 0) - (K - Q), Q)
    dk = tl.zeros([BN, D], tl.float32)
    dv = tl.zeros([BN, D], tl.float32)
    ds = tl.zeros([BN], tl.float32)
    n_heads = G
    if MISTAKE == ONE_HEAD:
        n_heads = 1
    for h in range(n_heads):
        bh = (bhk // Hkv) * Hq + (bhk % Hkv) * G + h          # a query head of this group
        for r0 in range(lo, hi, BM):
            i = r0 + tl.arange(0, BM)
            row = i < Q
            p = K - Q + i
            qo = bh * Q * D + i[:, None] * D + d[None, :]
            q = tl.load(q_ptr + qo, mask=row[:, None], other=0.0)
            do = tl.load(do_ptr + qo, mask=row[:, None], other=0.0)
            lse = tl.load(lse_ptr + bh * Q + i, mask=row, other=0.0)
            delta = tl.load(delta_ptr + bh * Q + i, mask=row, other=0.0)
            if MISTAKE != NO_LSE_GUARD:
                lse = tl.where(lse == float("-inf"), 0.0, lse)     # empty row: P = 0, no NaN
            x = tl.dot(q, tl.trans(k), input_precision="ieee") * scale + s_j[None, :]
            keep = (row[:, None] & col[None, :] & (j[None, :] <= p[:, None])
                    & (p[:, None] < e_j[None, :]))
            P = tl.where(keep, tl.exp(x - lse[:, None]), 0.0)
            dP = tl.dot(do, tl.trans(v), input_precision="ieee")
            if MISTAKE == DELTA_FROM_TILE:
                delta = tl.sum(P * dP, 1)
            dS = P * (dP - delta[:, None])
            dv += tl.dot(tl.trans(P), do, input_precision="ieee")
            dk += tl.dot(tl.trans(dS), q, input_precision="ieee")
            ds += tl.sum(dS, 0)
    tl.store(dk_ptr + kv, dk * scale, mask=col[:, None])
    tl.store(dv_ptr + kv, dv, mask=col[:, None])
    tl.store(ds_ptr + bhk * K + j, ds, mask=col)


@triton.jit
def km_body_right(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                  ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr,
                  BN: tl.constexpr):
    # The wrong kernels' body with no mistake: it must pass (each wrong one fails by its mistake).
    km_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
            ds_ptr, Q, K, Hq, Hkv, scale, D, BM, BN, RIGHT)


@triton.jit
def km_one_head(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr,
                BN: tl.constexpr):
    # Forgets the other G - 1 query heads of the group (GQA).
    km_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
            ds_ptr, Q, K, Hq, Hkv, scale, D, BM, BN, ONE_HEAD)


@triton.jit
def km_rows_as_positions(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr,
                         dv_ptr, ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr,
                         BM: tl.constexpr, BN: tl.constexpr):
    # Walks rows [j0, e_max) as if row i sat at position i: misses rows when Q < K.
    km_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
            ds_ptr, Q, K, Hq, Hkv, scale, D, BM, BN, ROWS_AS_POSITIONS)


@triton.jit
def km_delta_from_tile(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr,
                       dv_ptr, ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr,
                       BN: tl.constexpr):
    # Delta as a sum over this key block only (right only when the block is the whole row).
    km_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
            ds_ptr, Q, K, Hq, Hkv, scale, D, BM, BN, DELTA_FROM_TILE)


@triton.jit
def km_no_lse_guard(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr,
                    dv_ptr, ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr,
                    BN: tl.constexpr):
    # exp(-inf - (-inf)) on the empty row: NaN.
    km_body(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
            ds_ptr, Q, K, Hq, Hkv, scale, D, BM, BN, NO_LSE_GUARD)


@triton.jit
def km_by_torch(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr,
                BN: tl.constexpr):
    # A bypass: autograd of the reference, from inside the kernel.
    torch.autograd.grad(reference_attention(SOME_Q, SOME_KV, SOME_KV, SOME_S, 4).sum(), SOME_S)


@triton.jit
def km_by_package_helper(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr,
                         dv_ptr, ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr,
                         BM: tl.constexpr, BN: tl.constexpr):
    # A bypass: the package's keep test under an alias.
    j = tl.arange(0, BN)
    p = tl.arange(0, BM)
    package_keep_pairs(tl.zeros([BM, BN], tl.float32), j, j >= 0, p, e_ptr, 0, True, True, True)


def km_package_kernel():
    """A bypass: the package's backward kernel object passed as the learner's."""
    from dma_ref.kernels.backward import dma_bwd_kernel
    return dma_bwd_kernel
