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

With ``LAZY`` (the FlashAttention-4 trick) each row's m is a reference maximum that moves only
when the row's tile maximum passes it by more than ``RESCALE_LOG2``; P <= 2^8 in between, and
o, lse are the same function of the tiles (m cancels in acc / l).

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

import torch
import triton
import triton.language as tl

from .launch import KernelConfig, launch, padded_head_dim, precision
from .plan import KeyPlan
from .tiles import LN2, LOG2E, block_rows, list_bounds, load_rows, store_rows, tile_logits

# Lazy rescaling: the running maximum m (log2 units) is moved only when some row's grows by
# more than this; until then P = 2^(x - m) <= 2^8, well inside bf16 / fp16 and the fp32 sums.
RESCALE_LOG2 = tl.constexpr(8.0)


@triton.jit
def _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j, col_ok, p, qk_scale,
              HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr, TEST_COLS: tl.constexpr,
              TEST_CAUSAL: tl.constexpr, TEST_E: tl.constexpr, PREC: tl.constexpr,
              LAZY: tl.constexpr):
    _k, v, _koff, x = tile_logits(q, Kp, Vp, Sp, Ep, kv_base, s_base, j, col_ok, p, qk_scale,
                                  HEAD_D, HEAD_DP, TEST_COLS, TEST_CAUSAL, TEST_E, PREC)
    m_new = tl.maximum(m_i, tl.max(x, 1))
    if LAZY:
        # Each row moves its own m (a row's first kept key always does: +inf growth), so a
        # row's bits never depend on the other rows of the tile (causality stays bit-exact);
        # the tile skips the [M, D] rescale of acc when no row moves (a uniform branch), and
        # rows that stay are multiplied by exactly 1 when another row moves.
        grow = tl.where(m_new > m_i, m_new - m_i, 0.0)
        move = grow > RESCALE_LOG2
        if tl.max(move.to(tl.int32), 0) > 0:
            m_up = tl.where(move, m_new, m_i)
            alpha = tl.where(move, tl.exp2(m_i - tl.where(m_up == float("-inf"), 0.0, m_up)),
                             1.0)
            acc = acc * alpha[:, None]
            l_i = l_i * alpha
            m_i = m_up
        m_ref = tl.where(m_i == float("-inf"), 0.0, m_i)
        pt = tl.exp2(x - m_ref[:, None])
        l_i = l_i + tl.sum(pt, 1)
        acc = acc + tl.dot(pt.to(v.dtype), v, input_precision=PREC)
        return acc, m_i, l_i
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)      # no -inf - -inf
    alpha = tl.exp2(m_i - m_ref)
    pt = tl.exp2(x - m_ref[:, None])
    l_i = l_i * alpha + tl.sum(pt, 1)
    acc = acc * alpha[:, None] + tl.dot(pt.to(v.dtype), v, input_precision=PREC)
    return acc, m_new, l_i


@triton.jit(do_not_specialize=["SIZE_CLASS"])
def dma_fwd_kernel(Qp, Kp, Vp, Sp, Ep, IDX, START, CNT, Op, O32, LSE,
                   n_q, n_k, G, n_qb, qk_scale, SIZE_CLASS,
                   BLOCK_Q: tl.constexpr, GH: tl.constexpr, BLOCK_N: tl.constexpr,
                   HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr, CAUSAL: tl.constexpr,
                   DENSE: tl.constexpr, USE_E: tl.constexpr, PREC: tl.constexpr,
                   STORE_O32: tl.constexpr, LAZY: tl.constexpr):
    """q, o ``[B*Hq, Q, D]``; k, v ``[B*Hkv, K, D]`` contiguous; s ``[B*Hkv, K]`` (any float
    dtype, read as fp32); e int32 ``[B*Hkv, K]``; IDX/START/CNT the CSR key lists; LSE fp32
    ``[B*Hq, Q]``; with STORE_O32 also
    o in fp32 into O32 (the backward's ``Delta = rowsum(dO * O)`` from a bf16-rounded O would be
    the largest error of dq, dk and ds: about 3x the rounding error of the result).
    Grid ``(n_qb, B*Hkv*n_hg)``, ``n_hg = ceil(G / GH)``; head group hg covers query heads
    ``hg*GH .. hg*GH+GH-1``.
    SIZE_CLASS is not read: it is part of the autotuning key (log2 of the query-block count)."""
    qb = tl.program_id(0)
    bh, row_ok, p, hrow, p0, p1 = block_rows(qb, tl.program_id(1), G, n_q, n_k, BLOCK_Q, GH)
    M: tl.constexpr = GH * BLOCK_Q
    qrow = hrow * HEAD_D
    d = tl.arange(0, HEAD_DP)
    q = load_rows(Qp, qrow, row_ok, d, HEAD_D, HEAD_DP, True)
    kv_base = bh * n_k * HEAD_D
    s_base = bh * n_k

    m_i = tl.full([M], float("-inf"), tl.float32)
    l_i = tl.zeros([M], tl.float32)
    acc = tl.zeros([M, HEAD_DP], tl.float32)

    # 1. Off-diagonal keys: a gathered list, or [0, p0) (causal) / [0, K) (not) when dense.
    lst, n_list = list_bounds(START, CNT, bh, qb, n_qb, n_k, p0, CAUSAL, DENSE)
    if DENSE:
        # Contiguous keys: full tiles need no column test (nor any test when w >= K), the
        # partial last tile does.
        n_full = (n_list // BLOCK_N) * BLOCK_N
        for c in range(0, n_full, BLOCK_N):
            j = c + tl.arange(0, BLOCK_N)
            acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j, j >= 0,
                                      p, qk_scale, HEAD_D, HEAD_DP, False, False, USE_E, PREC,
                                      LAZY)
        if n_full < n_list:
            j = n_full + tl.arange(0, BLOCK_N)
            acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j,
                                      j < n_list, p, qk_scale, HEAD_D, HEAD_DP, True, False, USE_E,
                                      PREC, LAZY)
    else:
        for c in range(0, n_list, BLOCK_N):
            cols = c + tl.arange(0, BLOCK_N)
            col_ok = cols < n_list
            j = tl.load(IDX + lst + cols, mask=col_ok, other=0)
            acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j, col_ok,
                                      p, qk_scale, HEAD_D, HEAD_DP, True, False, USE_E, PREC,
                                      LAZY)
    # 2. The diagonal range [p0, p1], contiguous.
    if CAUSAL:
        for c in range(p0, p1 + 1, BLOCK_N):
            j = c + tl.arange(0, BLOCK_N)
            acc, m_i, l_i = _fwd_tile(q, acc, m_i, l_i, Kp, Vp, Sp, Ep, kv_base, s_base, j,
                                      j <= p1, p, qk_scale, HEAD_D, HEAD_DP, True, True, USE_E,
                                      PREC, LAZY)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    o = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * LN2)
    store_rows(Op, qrow, row_ok, d, o.to(Op.dtype.element_ty), HEAD_D, HEAD_DP)
    if STORE_O32:
        store_rows(O32, qrow, row_ok, d, o, HEAD_D, HEAD_DP)
    tl.store(LSE + hrow, lse, mask=row_ok)

# ------------------------------------------------------------------------------ host launcher

# Whether the forward rescales lazily (RESCALE_LOG2); off until measured on the H200, a switch so
# that scripts/gpu_variants.py can time both (figures/bench/PERF_NOTES.md).
LAZY_RESCALE = False


def scores_fp32(s: torch.Tensor) -> torch.Tensor:
    """s in fp32 for the kernels: gathered 2-byte loads of bf16 scores made the forward 40%
    slower on the H200 (figures/bench/PERF_NOTES.md); the copy is K floats per head."""
    return s if s.dtype == torch.float32 else s.float()


def dma_forward(q, k, v, s, plan: KeyPlan, scale: float, cfg: KernelConfig, GH: int,
                keep_fp32: bool = False):
    """Launch the forward (s ``[B, Hkv, K]`` contiguous, any float dtype). Returns
    ``(o [B, Hq, Q, D] in q's dtype, lse [B, Hq, Q] fp32, o32)``;
    ``o32`` is o in fp32 when ``keep_fp32`` and q is not fp32 (for the backward's Delta), else o.
    GH: query heads packed per program (at most; the autotuner may halve it)."""
    s = scores_fp32(s)
    B, Hq, Q, D = q.shape
    Hkv, K = k.shape[1], k.shape[2]
    G = Hq // Hkv
    o = torch.empty_like(q)
    store32 = keep_fp32 and q.dtype != torch.float32
    o32 = torch.empty(q.shape, dtype=torch.float32, device=q.device) if store32 else o
    lse = torch.empty(B, Hq, Q, dtype=torch.float32, device=q.device)
    consts = {"BLOCK_Q": plan.block_q, "HEAD_D": D, "HEAD_DP": padded_head_dim(D),
              "CAUSAL": plan.causal, "DENSE": plan.dense, "USE_E": plan.use_e,
              "PREC": precision(q.dtype), "STORE_O32": store32, "LAZY": LAZY_RESCALE}
    args = (q, k, v, s, plan.e, plan.idx, plan.start, plan.count, o, o32, lse,
            Q, K, G, plan.n_qb, scale * LOG2E.value, plan.n_qb.bit_length())
    launch(dma_fwd_kernel, "fwd", cfg, GH, plan.n_qb, B * Hkv, G, args, consts)
    return o, lse, o32
