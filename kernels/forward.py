"""The DMA forward kernel: FlashAttention-style online softmax over each query block's key union.

One program = one block of ``BLOCK_Q`` query positions x ``GH`` query heads of one KV head (GQA
packing: the ``M = GH * BLOCK_Q`` rows share every gathered K/V tile). It visits

1. the block's off-diagonal key list (``KeyPlan.idx``), ``BLOCK_N`` gathered keys at a time,
2. then, when causal, the diagonal range ``[p0, p1]`` contiguously,

and for every tile (all in fp32, logits in log2 units so that ``exp2`` is the exponential)::

    x_ij  = log2(e) * (scale * q_i . k_j + s_j)        if  keep(p_i, j) = j <= p_i < e_j
    m'    = max(m, max_j x_ij),  alpha = 2^(m - m'),  P_ij = 2^(x_ij - m')
    l'    = alpha l + sum_j P_ij,   acc' = alpha acc + P V
    o_i   = acc_i / l_i,   lse_i = ln(2) * (m_i + log2 l_i)        (o = 0, lse = -inf if l_i = 0)

Without lists (``DENSE``: ``w >= K``, or ``2 w >= K`` where lists would cost O(N w / BLOCK_Q)
memory for little less work) the program visits ``[0, p0)`` contiguously instead of a list; the
``e`` test (``USE_E``) stays on unless ``w >= K``.
No Q x K tensor exists; the work is O(rows x (|list| + BLOCK_Q)).
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, bh, j, col_ok, p, row_ok, n_k,
              qk_scale, HEAD_D: tl.constexpr, CAUSAL: tl.constexpr, USE_E: tl.constexpr,
              PREC: tl.constexpr):
    d = tl.arange(0, HEAD_D)
    koff = kv_base + j.to(tl.int64)[:, None] * HEAD_D + d[None, :]
    k = tl.load(Kp + koff, mask=col_ok[:, None], other=0.0)
    v = tl.load(Vp + koff, mask=col_ok[:, None], other=0.0)
    sj = tl.load(Sp + bh * n_k + j, mask=col_ok, other=0.0)
    x = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale + (sj * 1.4426950408889634)[None, :]
    keep = row_ok[:, None] & col_ok[None, :]
    if CAUSAL:
        keep = keep & (j[None, :] <= p[:, None])
    if USE_E:
        ej = tl.load(Ep + bh * n_k + j, mask=col_ok, other=0)
        keep = keep & (p[:, None] < ej[None, :])
    x = tl.where(keep, x, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(x, 1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)      # no -inf - -inf
    alpha = tl.exp2(m_i - m_ref)
    pt = tl.exp2(x - m_ref[:, None])
    l_i = l_i * alpha + tl.sum(pt, 1)
    acc = acc * alpha[:, None] + tl.dot(pt.to(v.dtype), v, input_precision=PREC)
    return acc, m_new, l_i


@triton.jit
def _block_rows(qb, pid, n_hg, G, n_q, n_k, BLOCK_Q: tl.constexpr, GH: tl.constexpr):
    """The packed rows of program ``(qb, pid)``, shared by the forward and the backward.

    Row r is query row ``i = qb BLOCK_Q + r % BLOCK_Q`` of query head ``g = hg GH + r // BLOCK_Q``.
    Returns ``bh`` (KV head), per row ``row_ok``, ``p`` (position) and ``hrow`` (row of the
    ``[B*Hq, Q]`` layout), and the block's first and last positions ``p0, p1``.
    """
    bh = (pid // n_hg).to(tl.int64)                 # int64: bh * K may pass 2^31 (many heads)
    hg = pid % n_hg
    rows = tl.arange(0, GH * BLOCK_Q)
    g = hg * GH + rows // BLOCK_Q
    i = qb * BLOCK_Q + rows % BLOCK_Q
    row_ok = (g < G) & (i < n_q)
    p = n_k - n_q + i
    hrow = (bh * G + g).to(tl.int64) * n_q + i
    p0 = n_k - n_q + qb * BLOCK_Q
    p1 = n_k - n_q + tl.minimum(qb * BLOCK_Q + BLOCK_Q, n_q) - 1
    return bh, row_ok, p, hrow, p0, p1


@triton.jit
def _list_bounds(START, CNT, bh, qb, n_qb, n_k, p0, CAUSAL: tl.constexpr, DENSE: tl.constexpr):
    """``(start, length)`` of the block's off-diagonal keys: its gathered list, or the keys
    ``[0, p0)`` (causal) / ``[0, K)`` (not) read contiguously when dense."""
    if DENSE:
        lst = 0
        if CAUSAL:
            n_list = p0
        else:
            n_list = n_k
    else:
        lst = tl.load(START + bh * n_qb + qb)
        n_list = tl.load(CNT + bh * n_qb + qb)
    return lst, n_list


@triton.jit
def dma_fwd_kernel(Qp, Kp, Vp, Sp, Ep, IDX, START, CNT, Op, O32, LSE,
                   n_q, n_k, G, n_qb, n_hg, qk_scale,
                   BLOCK_Q: tl.constexpr, GH: tl.constexpr, BLOCK_N: tl.constexpr,
                   HEAD_D: tl.constexpr, CAUSAL: tl.constexpr, DENSE: tl.constexpr,
                   USE_E: tl.constexpr, PREC: tl.constexpr, STORE_O32: tl.constexpr):
    """q, o ``[B*Hq, Q, D]``; k, v ``[B*Hkv, K, D]`` contiguous; s fp32 ``[B*Hkv, K]``; e int32
    ``[B*Hkv, K]``; IDX/START/CNT the CSR key lists; LSE fp32 ``[B*Hq, Q]``; with STORE_O32 also
    o in fp32 into O32 (the backward's ``Delta = rowsum(dO * O)`` from a bf16-rounded O would be
    the largest error of dq, dk and ds: about 3x the rounding error of the result).
    Grid ``(n_qb, B*Hkv*n_hg)``; head group hg covers query heads ``hg*GH .. hg*GH+GH-1``."""
    qb = tl.program_id(0)
    bh, row_ok, p, hrow, p0, p1 = _block_rows(qb, tl.program_id(1), n_hg, G, n_q, n_k, BLOCK_Q,
                                              GH)
    M: tl.constexpr = GH * BLOCK_Q
    qrow = hrow * HEAD_D
    d = tl.arange(0, HEAD_D)
    q = tl.load(Qp + qrow[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)
    kv_base = bh.to(tl.int64) * n_k * HEAD_D

    m_i = tl.full([M], float("-inf"), tl.float32)
    l_i = tl.zeros([M], tl.float32)
    acc = tl.zeros([M, HEAD_D], tl.float32)

    # 1. Off-diagonal keys: a gathered list, or [0, p0) (causal) / [0, K) (not) when dense.
    lst, n_list = _list_bounds(START, CNT, bh, qb, n_qb, n_k, p0, CAUSAL, DENSE)
    for c in range(0, n_list, BLOCK_N):
        cols = c + tl.arange(0, BLOCK_N)
        col_ok = cols < n_list
        if DENSE:
            j = cols
        else:
            j = tl.load(IDX + lst + cols, mask=col_ok, other=0)
        acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, bh, j, col_ok, p,
                                  row_ok, n_k, qk_scale, HEAD_D, CAUSAL, USE_E, PREC)
    # 2. The diagonal range [p0, p1], contiguous.
    if CAUSAL:
        for c in range(p0, p1 + 1, BLOCK_N):
            j = c + tl.arange(0, BLOCK_N)
            col_ok = j <= p1
            acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, bh, j, col_ok,
                                      p, row_ok, n_k, qk_scale, HEAD_D, CAUSAL, USE_E, PREC)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    o = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)
    tl.store(Op + qrow[:, None] + d[None, :], o.to(Op.dtype.element_ty), mask=row_ok[:, None])
    if STORE_O32:
        tl.store(O32 + qrow[:, None] + d[None, :], o, mask=row_ok[:, None])
    tl.store(LSE + hrow, lse, mask=row_ok)
