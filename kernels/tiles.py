"""Tile helpers shared by the forward and the backward kernels (``@triton.jit``, inlined).

* ``block_rows``: which packed rows (query heads x positions) a program owns;
* ``list_bounds``: where its off-diagonal keys are (a gathered list, or a contiguous range);
* ``load_rows`` / ``store_rows``: row tiles of any head dim (padded to a power of two);
* ``tile_logits``: the K, V rows of a key tile and its logits in log2 units, ``keep_pairs`` the
  keep test ``j <= p < e_j`` (only the parts a tile can fail).
"""

from __future__ import annotations

import triton
import triton.language as tl

# The kernels work in log2 units (exp2 is the hardware's exponential): x = log2(e) * logit, and
# lse = ln(2) * (m + log2 l) back in natural units.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def load_rows(ptr, row_off, ok, d, HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr,
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
def store_rows(ptr, row_off, ok, d, x, HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr):
    offs = row_off[:, None] + d[None, :]
    if HEAD_DP == HEAD_D:
        tl.store(ptr + offs, x, mask=ok[:, None])
    else:
        tl.store(ptr + offs, x, mask=ok[:, None] & (d < HEAD_D)[None, :])


@triton.jit
def keep_pairs(x, j, col_ok, p, Ep, e_base, TEST_COLS: tl.constexpr, TEST_CAUSAL: tl.constexpr,
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
def tile_logits(q, Kp, Vp, Sp, Ep, kv_base, s_base, j, col_ok, p, qk_scale,
                HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr, TEST_COLS: tl.constexpr,
                TEST_CAUSAL: tl.constexpr, TEST_E: tl.constexpr, PREC: tl.constexpr):
    """The K and V rows of keys ``j`` and the logits ``x = log2(e) (scale q.k + s_j)`` of the
    tile, -inf where the pair is not kept (shared by the forward and the backward)."""
    d = tl.arange(0, HEAD_DP)
    koff = kv_base + j.to(tl.int64) * HEAD_D
    k = load_rows(Kp, koff, col_ok, d, HEAD_D, HEAD_DP, TEST_COLS)
    v = load_rows(Vp, koff, col_ok, d, HEAD_D, HEAD_DP, TEST_COLS)
    if TEST_COLS:
        sj = tl.load(Sp + s_base + j, mask=col_ok, other=0.0).to(tl.float32)
    else:
        sj = tl.load(Sp + s_base + j).to(tl.float32)
    x = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale + (sj * LOG2E)[None, :]
    x = keep_pairs(x, j, col_ok, p, Ep, s_base, TEST_COLS, TEST_CAUSAL, TEST_E)
    return k, v, koff, x


@triton.jit
def block_rows(qb, pid, G, n_q, n_k, BLOCK_Q: tl.constexpr, GH: tl.constexpr):
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
def list_bounds(START, CNT, bh, qb, n_qb, n_k, p0, CAUSAL: tl.constexpr, DENSE: tl.constexpr):
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
