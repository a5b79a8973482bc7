"""The DMA backward kernel: query-major over the same key unions as the forward.

One program = the same ``GH * BLOCK_Q`` packed rows as the forward. With ``Delta_i =
sum_d dO_id O_id`` (computed by the program for its own rows, from the forward's fp32 O) and the
forward's ``lse``, for every visited tile of keys (the off-diagonal list, then the diagonal
range)::

    P_ij  = exp(scale q_i . k_j + s_j - lse_i)         (kept pairs; 0 elsewhere and on empty rows)
    dP_ij = dO_i . v_j
    dS_ij = P_ij (dP_ij - Delta_i + dlse_i)             (gradient of the logit; dlse: of lse)
    dQ_i += scale * sum_j dS_ij k_j                     (accumulated in registers, stored once)
    dK_j += scale * sum_i dS_ij q_i,  dV_j += sum_i P_ij dO_i,  ds_j += sum_i dS_ij

dK, dV and ds of a key receive contributions from several query blocks (every block whose union
holds it), so they are accumulated with fp32 atomic adds into fp32 buffers; the G query heads of
a group are summed inside the program first (GQA packing cuts the atomics by GH). Atomic adds
make dk, dv and ds non-deterministic in their last bits (the order of the additions varies);
dq is deterministic.

The deterministic path (``DETERMINISTIC``) stores each tile's contributions instead, one row per
visited (program, slot) into partial buffers PK, PV ``[rows, D]`` and PS ``[rows]`` fp32: block
qb of program pid owns the rows ``(pid n_qb + qb) R + [0, R)``, the list slots first (``LIST_W``
of them: slot c holds the c-th listed key), then ``BLOCK_Q`` diagonal slots (slot ``LIST_W + t``
holds key ``p0 + t``). ``reduce.reduce_partials_kernel`` then sums the rows of each key in a
fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dma_ref.numerics import cdiv

from .forward import scores_fp32
from .launch import KernelConfig, launch, padded_head_dim, precision
from .plan import KeyPlan
from .reduce import reduce_partials, slot_keys
from .tiles import LOG2E, block_rows, list_bounds, load_rows, store_rows, tile_logits


@triton.jit
def _bwd_tile(q, do, dq, lse2, delta, Kp, Vp, Sp, Ep, DK, DV, DS, kv_base, s_base, j, col_ok, p,
              qk_scale, scale, slot, HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr,
              TEST_COLS: tl.constexpr, TEST_CAUSAL: tl.constexpr, TEST_E: tl.constexpr,
              PREC: tl.constexpr, DS_F32: tl.constexpr, DETERMINISTIC: tl.constexpr):
    d = tl.arange(0, HEAD_DP)
    k, v, koff, x = tile_logits(q, Kp, Vp, Sp, Ep, kv_base, s_base, j, col_ok, p, qk_scale,
                                HEAD_D, HEAD_DP, TEST_COLS, TEST_CAUSAL, TEST_E, PREC)
    # Not kept: x = -inf, so P = 2^(x - lse) = 0 (empty rows have lse2 = +inf: P = 0 too).
    pt = tl.exp2(x - lse2[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=PREC)
    ds = pt * (dp - delta[:, None])
    if DS_F32:
        # fp16: small dS values would underflow to subnormals; keep dS in fp32. Plain tf32 (10
        # mantissa bits, truncated) measured 2.3x the rounding error of dq; 3xTF32 is exact-ish.
        dq += tl.dot(ds, k.to(tl.float32), input_precision="tf32x3")
        dk_t = tl.dot(tl.trans(ds), q.to(tl.float32), input_precision="tf32x3") * scale
    else:
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
        dk_t = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PREC) * scale
    dv_t = tl.dot(tl.trans(pt.to(do.dtype)), do, input_precision=PREC)
    if DETERMINISTIC:                 # DK, DV, DS are the partial buffers; slot: their rows
        poff = slot.to(tl.int64) * HEAD_D
        store_rows(DV, poff, col_ok, d, dv_t, HEAD_D, HEAD_DP)
        store_rows(DK, poff, col_ok, d, dk_t, HEAD_D, HEAD_DP)
        tl.store(DS + slot, tl.sum(ds, 0), mask=col_ok)
    else:
        koffs = koff[:, None] + d[None, :]
        if HEAD_DP == HEAD_D:
            kmask = col_ok[:, None]
        else:
            kmask = col_ok[:, None] & (d < HEAD_D)[None, :]
        tl.atomic_add(DV + koffs, dv_t, mask=kmask, sem="relaxed")
        tl.atomic_add(DK + koffs, dk_t, mask=kmask, sem="relaxed")
        tl.atomic_add(DS + s_base + j, tl.sum(ds, 0), mask=col_ok, sem="relaxed")
    return dq


@triton.jit(do_not_specialize=["SIZE_CLASS"])
def dma_bwd_kernel(Qp, Kp, Vp, Sp, Ep, IDX, START, CNT, DOp, LSE, DLSE, O32, DQ, DK, DV, DS,
                   n_q, n_k, G, n_qb, qk_scale, scale, LIST_W, SIZE_CLASS,
                   BLOCK_Q: tl.constexpr, GH: tl.constexpr, BLOCK_N: tl.constexpr,
                   HEAD_D: tl.constexpr, HEAD_DP: tl.constexpr, CAUSAL: tl.constexpr,
                   DENSE: tl.constexpr, USE_E: tl.constexpr, PREC: tl.constexpr,
                   DS_F32: tl.constexpr, DETERMINISTIC: tl.constexpr, HAS_DLSE: tl.constexpr):
    """Shapes as ``dma_fwd_kernel``; dO, dQ like q; O32 the forward's o in fp32 ``[B*Hq, Q, D]``;
    LSE fp32 ``[B*Hq, Q]``; with HAS_DLSE, DLSE fp32 ``[B*Hq, Q]`` the gradient of lse (it adds
    ``dlse_i P_ij`` to dS: Delta becomes ``Delta_i - dlse_i``); DK, DV fp32
    ``[B*Hkv, K, D]`` and DS fp32 ``[B*Hkv, K]``, zero-initialised, accumulated atomically (with
    ``DETERMINISTIC``: the partial buffers of the module docstring, ``LIST_W`` list slots).
    SIZE_CLASS is not read: it is part of the autotuning key."""
    qb = tl.program_id(0)
    pid = tl.program_id(1)
    bh, row_ok, p, hrow, p0, p1 = block_rows(qb, pid, G, n_q, n_k, BLOCK_Q, GH)
    M: tl.constexpr = GH * BLOCK_Q
    qrow = hrow * HEAD_D
    d = tl.arange(0, HEAD_DP)
    q = load_rows(Qp, qrow, row_ok, d, HEAD_D, HEAD_DP, True)
    do = load_rows(DOp, qrow, row_ok, d, HEAD_D, HEAD_DP, True)
    lse = tl.load(LSE + hrow, mask=row_ok, other=float("-inf"))
    # Empty rows (lse = -inf): use +inf so that P = 2^(x - inf) = 0 instead of NaN.
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    # Delta here rather than in torch: no [B, Hq, Q, D] fp32 temporaries, two launches fewer.
    o32 = load_rows(O32, qrow, row_ok, d, HEAD_D, HEAD_DP, True)
    delta = tl.sum(do.to(tl.float32) * o32, 1)
    if HAS_DLSE:
        delta -= tl.load(DLSE + hrow, mask=row_ok, other=0.0)
    delta = tl.where(lse == float("-inf"), 0.0, delta)             # empty rows: P = 0, no NaN
    kv_base = bh * n_k * HEAD_D
    s_base = bh * n_k
    dq = tl.zeros([M, HEAD_DP], tl.float32)
    row0 = (pid.to(tl.int64) * n_qb + qb) * (LIST_W + BLOCK_Q)   # first partial row (DETERMINISTIC)

    lst, n_list = list_bounds(START, CNT, bh, qb, n_qb, n_k, p0, CAUSAL, DENSE)
    if DENSE:
        n_full = (n_list // BLOCK_N) * BLOCK_N
        for c in range(0, n_full, BLOCK_N):
            j = c + tl.arange(0, BLOCK_N)
            dq = _bwd_tile(q, do, dq, lse2, delta, Kp, Vp, Sp, Ep, DK, DV, DS, kv_base, s_base, j,
                           j >= 0, p, qk_scale, scale, row0 + j, HEAD_D, HEAD_DP, False, False,
                           USE_E, PREC, DS_F32, DETERMINISTIC)
        if n_full < n_list:
            j = n_full + tl.arange(0, BLOCK_N)
            dq = _bwd_tile(q, do, dq, lse2, delta, Kp, Vp, Sp, Ep, DK, DV, DS, kv_base, s_base, j,
                           j < n_list, p, qk_scale, scale, row0 + j, HEAD_D, HEAD_DP, True, False,
                           USE_E, PREC, DS_F32, DETERMINISTIC)
    else:
        for c in range(0, n_list, BLOCK_N):
            cols = c + tl.arange(0, BLOCK_N)
            col_ok = cols < n_list
            j = tl.load(IDX + lst + cols, mask=col_ok, other=0)
            dq = _bwd_tile(q, do, dq, lse2, delta, Kp, Vp, Sp, Ep, DK, DV, DS, kv_base, s_base, j,
                           col_ok, p, qk_scale, scale, row0 + cols, HEAD_D, HEAD_DP, True, False,
                           USE_E, PREC, DS_F32, DETERMINISTIC)
    if CAUSAL:
        for c in range(p0, p1 + 1, BLOCK_N):
            j = c + tl.arange(0, BLOCK_N)
            dq = _bwd_tile(q, do, dq, lse2, delta, Kp, Vp, Sp, Ep, DK, DV, DS, kv_base, s_base, j,
                           j <= p1, p, qk_scale, scale, row0 + LIST_W + (j - p0), HEAD_D, HEAD_DP,
                           True, True, USE_E, PREC, DS_F32, DETERMINISTIC)
    store_rows(DQ, qrow, row_ok, d, (dq * scale).to(DQ.dtype.element_ty), HEAD_D, HEAD_DP)


# ------------------------------------------------------------------------------ host launcher

def dma_backward(do, q, k, v, s, o, lse, plan: KeyPlan, scale: float, cfg: KernelConfig,
                 GH: int, deterministic: bool = False, dlse: torch.Tensor | None = None):
    """Launch the backward. Returns ``(dq, dk32, dv32, ds32)``; dk, dv, ds in fp32.

    o: the forward output in fp32 (``dma_forward(..., keep_fp32=True)``) for an accurate Delta
    (computed inside the kernel).
    ``deterministic``: partial buffers and a fixed-order reduction instead of atomic adds
    (sparse plans only; see the module docstring; its head packing is not tuned, the partial rows
    depend on it). ``dlse``: the gradient of lse ``[B, Hq, Q]``, if any."""
    B, Hq, Q, D = q.shape
    Hkv, K = k.shape[1], k.shape[2]
    G = Hq // Hkv
    n_hg = cdiv(G, GH)
    s = scores_fp32(s)
    dq = torch.empty_like(q)
    dk = torch.zeros(B, Hkv, K, D, dtype=torch.float32, device=q.device)
    dv = torch.zeros_like(dk)
    ds = torch.zeros(B, Hkv, K, dtype=torch.float32, device=q.device)
    list_w, key_map = 0, None
    if deterministic:
        list_w, key_map = slot_keys(plan, B * Hkv, Q, K)            # [BH, nQB, R]
        rows = B * Hkv * n_hg * plan.n_qb * (list_w + plan.block_q)
        pk = torch.empty(rows, D, dtype=torch.float32, device=q.device)
        pv, ps = torch.empty_like(pk), torch.empty(rows, dtype=torch.float32, device=q.device)
    consts = {"BLOCK_Q": plan.block_q, "HEAD_D": D, "HEAD_DP": padded_head_dim(D),
              "CAUSAL": plan.causal, "DENSE": plan.dense, "USE_E": plan.use_e,
              "PREC": precision(q.dtype), "DS_F32": q.dtype == torch.float16,
              "DETERMINISTIC": deterministic, "HAS_DLSE": dlse is not None}
    args = (q, k, v, s, plan.e, plan.idx, plan.start, plan.count, do, lse,
            lse if dlse is None else dlse, o, dq,
            *((pk, pv, ps) if deterministic else (dk, dv, ds)),
            Q, K, G, plan.n_qb, scale * LOG2E.value, scale, list_w, plan.n_qb.bit_length())
    launch(dma_bwd_kernel, "bwd", cfg, GH, plan.n_qb, B * Hkv, G, args, consts,
           tune=not deterministic)
    if deterministic:
        reduce_partials(pk, pv, ps, key_map, n_hg, K, dk, dv, ds)
    return dq, dk, dv, ds
