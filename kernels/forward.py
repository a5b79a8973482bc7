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
``e`` test (``USE_E``) stays on unless ``w >= K``. Each tile tests only what can fail there:
a listed key always satisfies ``j < p0 <= p`` (no causal test), and with ``w >= K`` the full
tiles before the diagonal keep every pair (no mask at all: plain causal attention plus a bias).

Any head dim: ``HEAD_D`` is the real D (the row stride), ``HEAD_DP`` the next power of two >= 16
that ``tl.arange`` and ``tl.dot`` work on; the padded columns load as zeros and are never stored.
No Q x K tensor exists; the work is O(rows x (|list| + BLOCK_Q)).
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _load_rows(ptr, row_off, ok, d, HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr,
               MASKED: tl.constexpr):
    """``ptr[row_off[r] + d]`` as an ``[R, HEAD_DP]`` tile; rows with ``ok = False`` (when
    ``MASKED``) and the padded columns ``d >= HEAD_D`` read as zeros."""
    offs = row_off[:, None] + d[None, :]
    if HEAD_DP == HEAD_D:
        if MASKED:
            x = tl.load(ptr + offs, mask=ok[:, None], other=0.0)
        else:
            x = tl.load(ptr + offs)
    else:
        if MASKED:
            x = tl.load(ptr + offs, mask=ok[:, None] & (d < HEAD_D)[None, :], other=0.0)
        else:
            x = tl.load(ptr + offs, mask=(d < HEAD_D)[None, :], other=0.0)
    return x


@triton.jit
def _store_rows(ptr, row_off, ok, d, x, HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr):
    offs = row_off[:, None] + d[None, :]
    if HEAD_DP == HEAD_D:
        tl.store(ptr + offs, x, mask=ok[:, None])
    else:
        tl.store(ptr + offs, x, mask=ok[:, None] & (d < HEAD_D)[None, :])


@triton.jit
def _keep(x, j, col_ok, p, Ep, e_base, TEST_COLS: tl.constexpr, TEST_CAUSAL: tl.constexpr,
          TEST_E: tl.constexpr):
    """``x`` with the pairs that are not kept set to -inf: only the tests a tile needs."""
    if TEST_COLS or TEST_CAUSAL or TEST_E:
        keep = tl.full(x.shape, 1, tl.int1)
        if TEST_COLS:
            keep = keep & col_ok[None, :]
        if TEST_CAUSAL:
            keep = keep & (j[None, :] <= p[:, None])
        if TEST_E:
            ej = tl.load(Ep + e_base + j, mask=col_ok, other=0)
            keep = keep & (p[:, None] < ej[None, :])
        x = tl.where(keep, x, float("-inf"))
    return x


@triton.jit
def _tile_logits(q, Kp, Vp, Sp, Ep, kv_base, s_base, j, col_ok, p, qk_scale,
                 HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr, TEST_COLS: tl.constexpr,
                 TEST_CAUSAL: tl.constexpr, TEST_E: tl.constexpr, PREC: tl.constexpr):
    """The K and V rows of keys ``j`` and the logits ``x = log2(e) (scale q.k + s_j)`` of the
    tile, -inf where the pair is not kept (shared by the forward and the backward)."""
    d = tl.arange(0, HEAD_DP)
    koff = kv_base + j.to(tl.int64) * HEAD_D
    k = _load_rows(Kp, koff, col_ok, d, HEAD_D, HEAD_DP, TEST_COLS)
    v = _load_rows(Vp, koff, col_ok, d, HEAD_D, HEAD_DP, TEST_COLS)
    if TEST_COLS:
        sj = tl.load(Sp + s_base + j, mask=col_ok, other=0.0).to(tl.float32)
    else:
        sj = tl.load(Sp + s_base + j).to(tl.float32)
    x = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale + (sj * 1.4426950408889634)[None, :]
    x = _keep(x, j, col_ok, p, Ep, s_base, TEST_COLS, TEST_CAUSAL, TEST_E)
    return k, v, koff, x


@triton.jit
def _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j, col_ok, p, qk_scale,
              HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr, TEST_COLS: tl.constexpr,
              TEST_CAUSAL: tl.constexpr, TEST_E: tl.constexpr, PREC: tl.constexpr):
    _k, v, _koff, x = _tile_logits(q, Kp, Vp, Sp, Ep, kv_base, s_base, j, col_ok, p, qk_scale,
                                   HEAD_D, HEAD_DP, TEST_COLS, TEST_CAUSAL, TEST_E, PREC)
    m_new = tl.maximum(m_i, tl.max(x, 1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)      # no -inf - -inf
    alpha = tl.exp2(m_i - m_ref)
    pt = tl.exp2(x - m_ref[:, None])
    l_i = l_i * alpha + tl.sum(pt, 1)
    acc = acc * alpha[:, None] + tl.dot(pt.to(v.dtype), v, input_precision=PREC)
    return acc, m_new, l_i


@triton.jit
def _block_rows(qb, pid, G, n_q, n_k, BLOCK_Q: tl.constexpr, GH: tl.constexpr):
    """The packed rows of program ``(qb, pid)``, shared by the forward and the backward.

    Row r is query row ``i = qb BLOCK_Q + r % BLOCK_Q`` of query head ``g = hg GH + r // BLOCK_Q``.
    Returns ``bh`` (KV head), per row ``row_ok``, ``p`` (position) and ``hrow`` (row of the
    ``[B*Hq, Q]`` layout), and the block's first and last positions ``p0, p1``.
    """
    n_hg = tl.cdiv(G, GH)                           # head groups per KV head
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


@triton.jit(do_not_specialize=["SIZE_CLASS"])
def dma_fwd_kernel(Qp, Kp, Vp, Sp, Ep, IDX, START, CNT, Op, O32, LSE,
                   n_q, n_k, G, n_qb, qk_scale, SIZE_CLASS,
                   BLOCK_Q: tl.constexpr, GH: tl.constexpr, BLOCK_N: tl.constexpr,
                   HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr, CAUSAL: tl.constexpr,
                   DENSE: tl.constexpr, USE_E: tl.constexpr, PREC: tl.constexpr,
                   STORE_O32: tl.constexpr):
    """q, o ``[B*Hq, Q, D]``; k, v ``[B*Hkv, K, D]`` contiguous; s ``[B*Hkv, K]`` (any float
    dtype, read as fp32); e int32 ``[B*Hkv, K]``; IDX/START/CNT the CSR key lists; LSE fp32
    ``[B*Hq, Q]``; with STORE_O32 also
    o in fp32 into O32 (the backward's ``Delta = rowsum(dO * O)`` from a bf16-rounded O would be
    the largest error of dq, dk and ds: about 3x the rounding error of the result).
    Grid ``(n_qb, B*Hkv*n_hg)``, ``n_hg = ceil(G / GH)``; head group hg covers query heads
    ``hg*GH .. hg*GH+GH-1``.
    SIZE_CLASS is not read: it is part of the autotuning key (log2 of the query-block count)."""
    qb = tl.program_id(0)
    bh, row_ok, p, hrow, p0, p1 = _block_rows(qb, tl.program_id(1), G, n_q, n_k, BLOCK_Q, GH)
    M: tl.constexpr = GH * BLOCK_Q
    qrow = hrow * HEAD_D
    d = tl.arange(0, HEAD_DP)
    q = _load_rows(Qp, qrow, row_ok, d, HEAD_D, HEAD_DP, True)
    kv_base = bh * n_k * HEAD_D
    s_base = bh * n_k

    m_i = tl.full([M], float("-inf"), tl.float32)
    l_i = tl.zeros([M], tl.float32)
    acc = tl.zeros([M, HEAD_DP], tl.float32)

    # 1. Off-diagonal keys: a gathered list, or [0, p0) (causal) / [0, K) (not) when dense.
    lst, n_list = _list_bounds(START, CNT, bh, qb, n_qb, n_k, p0, CAUSAL, DENSE)
    if DENSE:
        # Contiguous keys: full tiles need no column test (nor any test when w >= K), the
        # partial last tile does.
        n_full = (n_list // BLOCK_N) * BLOCK_N
        for c in range(0, n_full, BLOCK_N):
            j = c + tl.arange(0, BLOCK_N)
            acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j, j >= 0,
                                      p, qk_scale, HEAD_D, HEAD_DP, False, False, USE_E, PREC)
        if n_full < n_list:
            j = n_full + tl.arange(0, BLOCK_N)
            acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j,
                                      j < n_list, p, qk_scale, HEAD_D, HEAD_DP, True, False, USE_E,
                                      PREC)
    else:
        for c in range(0, n_list, BLOCK_N):
            cols = c + tl.arange(0, BLOCK_N)
            col_ok = cols < n_list
            j = tl.load(IDX + lst + cols, mask=col_ok, other=0)
            acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j, col_ok,
                                      p, qk_scale, HEAD_D, HEAD_DP, True, False, USE_E, PREC)
    # 2. The diagonal range [p0, p1], contiguous.
    if CAUSAL:
        for c in range(p0, p1 + 1, BLOCK_N):
            j = c + tl.arange(0, BLOCK_N)
            acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j,
                                      j <= p1, p, qk_scale, HEAD_D, HEAD_DP, True, True, USE_E,
                                      PREC)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    o = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)
    _store_rows(Op, qrow, row_ok, d, o.to(Op.dtype.element_ty), HEAD_D, HEAD_DP)
    if STORE_O32:
        _store_rows(O32, qrow, row_ok, d, o, HEAD_D, HEAD_DP)
    tl.store(LSE + hrow, lse, mask=row_ok)
