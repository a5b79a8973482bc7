"""``dma_attention``: the Triton DMA forward and backward behind one autograd Function.

    plan  = build_plan(s, w)                       (lifetimes e + per-query-block key lists)
    o, lse = dma_fwd_kernel(q, k, v, s, plan)      (forward.py)
    dq, dk, dv, ds = dma_bwd_kernel(..., lse, O)   (backward.py; Delta = rowsum(dO * O) inside)

The selection (the plan) is a constant of the forward pass, as in ``dma_ref.naive_dma_attention``
(top-k is not differentiated); gradients reach q, k, v and s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton

from dma_ref.validate import (
    check_flag,
    check_mode,
    check_qkv,
    check_scores,
    check_window,
    default_scale,
)

from .backward import dma_bwd_kernel, reduce_partials_kernel
from .blocks import KeyPlan, block_key_lists, build_plan
from .forward import LOG2E, dma_fwd_kernel
from .lifetimes import _on_triton

__all__ = [
    "BWD_CONFIG",
    "FWD_CONFIG",
    "HEAD_DIMS",
    "KernelConfig",
    "dma_attention",
    "dma_backward",
    "dma_forward",
]

HEAD_DIMS = (16, 32, 64, 128, 256)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class KernelConfig:
    """Launch shape: ``rows`` = GH * BLOCK_Q packed query rows per program (GH = query heads of
    one KV group packed together, at most ``max_heads``), ``block_n`` keys per tile."""

    rows: int = 128
    block_n: int = 32
    num_warps: int = 4
    num_stages: int = 3
    max_heads: int = 8


FWD_CONFIG = KernelConfig(rows=128, block_n=32, num_warps=4, num_stages=3)
BWD_CONFIG = KernelConfig(rows=128, block_n=64, num_warps=8, num_stages=1)
# The interpreter runs programs one after another in NumPy: small tiles keep tests fast.
INTERP_CONFIG = KernelConfig(rows=32, block_n=16, num_warps=1, num_stages=1, max_heads=4)


def _fit(cfg: KernelConfig, D: int, elt_bytes: int, backward: bool) -> KernelConfig:
    """Shrink the tiles for wide rows: shared memory grows with rows x D x element size (the
    backward holds q, dO and fp32 dQ; fp16's backward uses fp32 operands). Measured on the H200:
    bf16 D=256 fits 128 rows forward; the fp16 backward at D=256 with 128 rows needed 320 KB."""
    budget = (32768 if backward else 65536) // (D * elt_bytes)
    rows = max(16, min(cfg.rows, triton.next_power_of_2(budget) if budget >= 16 else 16))
    bn_budget = 16384 // (D * elt_bytes)
    block_n = max(16, min(cfg.block_n, bn_budget)) if backward else cfg.block_n
    return KernelConfig(rows, block_n, cfg.num_warps, cfg.num_stages, cfg.max_heads)


def _elt_bytes(dtype: torch.dtype, backward: bool) -> int:
    return 4 if dtype == torch.float32 or (backward and dtype == torch.float16) else 2


def _shape(cfg: KernelConfig, G: int, Q: int) -> tuple[int, int]:
    """(GH, BLOCK_Q): heads packed per program and query positions per block (M >= 16)."""
    GH = min(triton.next_power_of_2(G), cfg.max_heads)
    bq = max(1, cfg.rows // GH)
    bq = min(bq, triton.next_power_of_2(Q))              # decoding: do not pad Q = 1 to 128 rows
    bq = max(bq, -(-16 // GH))                           # tl.dot needs M = GH * BLOCK_Q >= 16
    return GH, triton.next_power_of_2(bq)


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _warps(cfg: KernelConfig, GH: int, block_q: int) -> int:
    """Fewer warps for small row blocks (decoding): 8 warps on 16 rows only add overhead."""
    return cfg.num_warps if GH * block_q >= 64 else min(cfg.num_warps, 4)


def dma_forward(q, k, v, s32, plan: KeyPlan, scale: float, cfg: KernelConfig, GH: int,
                keep_fp32: bool = False):
    """Launch the forward. Returns ``(o [B, Hq, Q, D] in q's dtype, lse [B, Hq, Q] fp32, o32)``;
    ``o32`` is o in fp32 when ``keep_fp32`` and q is not fp32 (for the backward's Delta), else o."""
    B, Hq, Q, D = q.shape
    Hkv, K = k.shape[1], k.shape[2]
    G = Hq // Hkv
    n_hg = -(-G // GH)
    o = torch.empty_like(q)
    store32 = keep_fp32 and q.dtype != torch.float32
    o32 = torch.empty(q.shape, dtype=torch.float32, device=q.device) if store32 else o
    lse = torch.empty(B, Hq, Q, dtype=torch.float32, device=q.device)
    grid = (plan.n_qb, B * Hkv * n_hg)
    dma_fwd_kernel[grid](
        q, k, v, s32, plan.e, plan.idx, plan.start, plan.count, o, o32, lse,
        Q, K, G, plan.n_qb, n_hg, scale * LOG2E,
        BLOCK_Q=plan.block_q, GH=GH, BLOCK_N=cfg.block_n, HEAD_D=D, CAUSAL=plan.causal,
        DENSE=plan.dense, USE_E=plan.use_e, PREC=_prec(q.dtype), STORE_O32=store32,
        num_warps=_warps(cfg, GH, plan.block_q), num_stages=cfg.num_stages)
    return o, lse, o32


def dma_backward(do, q, k, v, s32, o, lse, plan: KeyPlan, scale: float, cfg: KernelConfig,
                 GH: int, deterministic: bool = False, dlse: torch.Tensor | None = None):
    """Launch the backward. Returns ``(dq, dk32, dv32, ds32)``; dk, dv, ds in fp32.

    o: the forward output in fp32 (``dma_forward(..., keep_fp32=True)``) for an accurate Delta
    (computed inside the kernel).
    ``deterministic``: partial buffers and a fixed-order reduction instead of atomic adds
    (sparse plans only; see backward.py). ``dlse``: the gradient of lse ``[B, Hq, Q]``, if any."""
    B, Hq, Q, D = q.shape
    Hkv, K = k.shape[1], k.shape[2]
    G = Hq // Hkv
    n_hg = -(-G // GH)
    dq = torch.empty_like(q)
    dk = torch.zeros(B, Hkv, K, D, dtype=torch.float32, device=q.device)
    dv = torch.zeros_like(dk)
    ds = torch.zeros(B, Hkv, K, dtype=torch.float32, device=q.device)
    list_w, key_map = 0, None
    if deterministic:
        list_w, key_map = _slot_keys(plan, B * Hkv, Q, K)            # [BH, nQB, R]
        rows = B * Hkv * n_hg * plan.n_qb * (list_w + plan.block_q)
        pk = torch.empty(rows, D, dtype=torch.float32, device=q.device)
        pv, ps = torch.empty_like(pk), torch.empty(rows, dtype=torch.float32, device=q.device)
    grid = (plan.n_qb, B * Hkv * n_hg)
    dma_bwd_kernel[grid](
        q, k, v, s32, plan.e, plan.idx, plan.start, plan.count, do, lse,
        lse if dlse is None else dlse.float().contiguous(), o, dq,
        *((pk, pv, ps) if deterministic else (dk, dv, ds)),
        Q, K, G, plan.n_qb, n_hg, scale * LOG2E, scale, list_w,
        BLOCK_Q=plan.block_q, GH=GH, BLOCK_N=cfg.block_n, HEAD_D=D, CAUSAL=plan.causal,
        DENSE=plan.dense, USE_E=plan.use_e, PREC=_prec(q.dtype), DS_F32=q.dtype == torch.float16,
        DETERMINISTIC=deterministic, HAS_DLSE=dlse is not None,
        num_warps=_warps(cfg, GH, plan.block_q), num_stages=cfg.num_stages)
    if deterministic:
        _reduce_partials(pk, pv, ps, key_map, n_hg, K, dk, dv, ds)
    return dq, dk, dv, ds


def _slot_keys(plan: KeyPlan, BH: int, Q: int, K: int) -> tuple[int, torch.Tensor]:
    """``(LIST_W, key_map int64 [BH, nQB, LIST_W + BLOCK_Q])``: the key whose contribution each
    partial row of a block holds (-1: the row is never written), as backward.py lays them out."""
    BQ, n_qb, dev = plan.block_q, plan.n_qb, plan.count.device
    if plan.causal:
        W = plan.idx.numel() // (BH * n_qb)                   # the fixed slot of block_key_lists
        slots = plan.idx.view(BH, n_qb, W).long()
    else:                                                     # one shared top-w list per head
        W = plan.idx.numel() // BH
        slots = plan.idx.view(BH, 1, W).long().expand(BH, n_qb, W)
    listed = torch.arange(W, device=dev)[None, None, :] < plan.count[:, :, None]
    slots = torch.where(listed, slots, -1)
    p0 = (K - Q) + torch.arange(n_qb, device=dev) * BQ                       # [nQB]
    diag = p0[:, None] + torch.arange(BQ, device=dev)[None, :]              # [nQB, BQ]
    p1 = (K - Q) + torch.clamp((torch.arange(n_qb, device=dev) + 1) * BQ, max=Q) - 1
    diag = torch.where(diag <= p1[:, None], diag, -1) if plan.causal else torch.full_like(diag, -1)
    return W, torch.cat([slots, diag.expand(BH, n_qb, BQ)], dim=2)


def _reduce_partials(pk, pv, ps, key_map, n_hg: int, K: int, dk, dv, ds) -> None:
    """dk, dv, ds (fp32, written in place) = the sum of each key's partial rows, in row order."""
    BH, n_qb, R = key_map.shape
    km = key_map[:, None].expand(BH, n_hg, n_qb, R).reshape(BH, -1)           # partial row order
    key = torch.where(km >= 0, km + torch.arange(BH, device=km.device)[:, None] * K, -1).flatten()
    keep = key >= 0
    rows = torch.arange(key.numel(), device=key.device)[keep]
    key = key[keep]
    key_sorted, order = torch.sort(key, stable=True)          # stable: each key's rows ascending
    cnt = torch.bincount(key_sorted, minlength=BH * K)
    off = torch.cumsum(cnt, 0) - cnt
    D = dk.shape[-1]
    reduce_partials_kernel[(BH * K,)](pk, pv, ps, rows[order].contiguous(), off, cnt,
                                      dk.view(BH * K, D), dv.view(BH * K, D), ds.view(BH * K),
                                      HEAD_D=D, num_warps=1)


def _replan(plan: KeyPlan, Q: int, block_q: int) -> KeyPlan:
    """The same selection with key lists for another query block size."""
    if plan.block_q == block_q:
        return plan
    n_qb = -(-Q // block_q)
    if plan.dense:
        return KeyPlan(plan.causal, True, plan.window, block_q, n_qb, plan.e, plan.idx, plan.start,
                       plan.count)
    if not plan.causal:                       # every block lists the same top-w set
        BH = plan.start.shape[0]
        start = plan.start[:, :1].expand(BH, n_qb).contiguous()
        count = plan.count[:, :1].expand(BH, n_qb).contiguous()
        return KeyPlan(False, False, plan.window, block_q, n_qb, plan.e, plan.idx, start, count)
    idx, start, count = block_key_lists(plan.e, Q, block_q, plan.window)
    return KeyPlan(True, False, plan.window, block_q, n_qb, plan.e, idx, start, count)


class _DMAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, s, window, causal, scale, mode, fwd_cfg, bwd_cfg, deterministic):
        _B, Hq, Q, _D = q.shape
        G = Hq // k.shape[1]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        s32 = s.detach().to(torch.float32).contiguous()
        GH, bq = _shape(fwd_cfg, G, Q)
        plan = build_plan(s.detach(), window, Q, causal=causal, mode=mode, block_q=bq,
                          lists=True if deterministic else None)
        need_grad = any(ctx.needs_input_grad[:4])
        o, lse, o32 = dma_forward(q, k, v, s32, plan, scale, fwd_cfg, GH, keep_fp32=need_grad)
        ctx.save_for_backward(q, k, v, s32, o32, lse)
        ctx.plan, ctx.scale, ctx.bwd_cfg, ctx.s_dtype = plan, scale, bwd_cfg, s.dtype
        ctx.deterministic = deterministic
        ctx.set_materialize_grads(False)          # no zero tensors for gradients nobody sends
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, s32, o, lse = ctx.saved_tensors
        if do is None:                            # the loss reads lse only
            do = torch.zeros_like(q)
        G = q.shape[1] // k.shape[1]
        GH, bq = _shape(ctx.bwd_cfg, G, q.shape[2])
        plan = _replan(ctx.plan, q.shape[2], bq)
        dq, dk, dv, ds = dma_backward(do.contiguous(), q, k, v, s32, o, lse, plan, ctx.scale,
                                      ctx.bwd_cfg, GH, ctx.deterministic, dlse)
        return (dq, dk.to(k.dtype), dv.to(v.dtype), ds.to(ctx.s_dtype),
                None, None, None, None, None, None, None)


def dma_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                  window: int, *, causal: bool = True, scale: float | None = None,
                  mode: str = "row", return_lse: bool = False,
                  fwd_config: KernelConfig | None = None, bwd_config: KernelConfig | None = None,
                  deterministic: bool = False):
    """Dynamic Mask Attention with Triton kernels; differentiable in q, k, v and s.

    q ``[B, Hq, Q, D]``; k, v ``[B, Hkv, K, D]`` (Hq = G * Hkv); s ``[B, Hkv, K]`` (any float
    dtype; used in fp32); ``Q <= K``, query row i at position ``K - Q + i``; D in
    {16, 32, 64, 128, 256}; q, k, v in fp16, bf16 or fp32. ``window`` = w, ``mode`` "row" or
    "global", ``scale`` defaults to ``D ** -0.5``. Returns o ``[B, Hq, Q, D]`` in q's dtype (and
    ``lse [B, Hq, Q]`` fp32, natural log, with ``return_lse``; both are differentiable). Equals
    ``dma_ref.naive_dma_attention``; rows with no kept key give ``o = 0`` and ``lse = -inf``.
    dk, dv and ds are accumulated with fp32 atomic adds: their last bits vary between runs.
    ``deterministic=True`` makes them bit-reproducible (partial sums per query block, reduced in
    a fixed order; extra memory ~ 2 G Q (w + BLOCK_Q) D / (GH BLOCK_Q) fp32 per KV head, GH the
    query heads packed per program, and slower); it needs w < K.
    """
    B, Hq, Hkv, Q, K, D = check_qkv(q, k, v, q_le_k=True)
    if q.dtype not in DTYPES:
        raise TypeError(f"dma_attention supports q, k, v in float16, bfloat16 or float32; got "
                        f"{q.dtype} (use dma_ref.naive_dma_attention for {q.dtype})")
    check_scores(s, B, Hkv, K, q.device)
    w = check_window(window)
    check_mode(mode)
    check_flag(causal, "causal")
    check_flag(deterministic, "deterministic")
    if deterministic and w >= K:
        raise ValueError(f"deterministic=True needs window < K (the sparse path); got window={w}, "
                         f"K={K}. Use deterministic=False (atomic adds) for the dense regime")
    scale = default_scale(scale, D)
    if D not in HEAD_DIMS:
        raise ValueError(f"head dim D={D} (last dim of q [B, Hq, Q, D]) is not supported; "
                         f"use one of {HEAD_DIMS}")
    if not _on_triton(q):
        raise RuntimeError(f"q is on {q.device}: the Triton kernels need a CUDA device, or "
                           "TRITON_INTERPRET=1 set before dma_ref.kernels is imported "
                           "(call dma_ref.setup_device() first)")
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    fwd_cfg = fwd_config or (INTERP_CONFIG if interp else
                             _fit(FWD_CONFIG, D, _elt_bytes(q.dtype, False), False))
    bwd_cfg = bwd_config or (INTERP_CONFIG if interp else
                             _fit(BWD_CONFIG, D, _elt_bytes(q.dtype, True), True))
    if q.numel() == 0 or K == 0:
        o = torch.zeros_like(q) + 0 * (k.sum() + v.sum() + s.sum())
        lse = torch.full((B, Hq, Q), float("-inf"), dtype=torch.float32, device=q.device)
        return (o, lse) if return_lse else o
    o, lse = _DMAFunction.apply(q, k, v, s, w, causal, scale, mode, fwd_cfg, bwd_cfg,
                                deterministic)
    return (o, lse) if return_lse else o
