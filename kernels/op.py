"""``dma_attention``: the Triton DMA forward and backward behind two custom operators.

    plan  = build_plan(s, w)                       (lifetimes e + per-query-block key lists)
    o, lse = dma_fwd_kernel(q, k, v, s, plan)      (forward.py)
    dq, dk, dv, ds = dma_bwd_kernel(..., lse, O)   (backward.py; Delta = rowsum(dO * O) inside)

The selection (the plan) is a constant of the forward pass, as in ``dma_ref.naive_dma_attention``
(top-k is not differentiated); gradients reach q, k, v and s.

Both passes are ``torch.library`` custom operators (``dma_ref::attention_fwd``,
``dma_ref::attention_bwd``) with fake (meta) implementations and a registered autograd formula:
``torch.compile`` traces a model that calls ``dma_attention`` without a graph break, and neither
pass synchronises with the host (no ``.item()``, no data-dependent sizes: every key list has a
fixed slot of ``min(w, K)`` entries), so a training step can be captured in a CUDA graph.
On CUDA the block shapes (``BLOCK_N``, warps, pipeline stages) are autotuned once per kernel
variant and size class; warm up once before capturing a CUDA graph.
"""

from __future__ import annotations

import torch

from dma_ref.numerics import cdiv
from dma_ref.validate import (
    check_flag,
    check_mode,
    check_qkv,
    check_scores,
    check_window,
    default_scale,
)

from . import dense_sdpa, launch
from .backward import dma_backward
from .forward import dma_forward
from .launch import (
    BWD_CONFIG,
    DTYPES,
    FWD_CONFIG,
    HEAD_DIMS,
    INTERP_CONFIG,
    KernelConfig,
    fit_config,
    tile_shape,
)
from .plan import KeyPlan, build_plan, plan_shapes, replan
from .ranks import on_triton

__all__ = ["attention_bwd", "attention_fwd", "backward_impl", "dma_attention", "forward_impl"]


# ------------------------------------------------------------------- the custom operators
#
# Configs travel as int lists [rows, block_n (0: autotuned), num_warps, num_stages, max_heads]:
# custom operators take plain types only.


def _cfg_list(cfg: KernelConfig) -> list[int]:
    return [cfg.rows, cfg.block_n or 0, cfg.num_warps, cfg.num_stages, cfg.max_heads]


def _cfg(values) -> KernelConfig:
    rows, block_n, warps, stages, heads = (int(x) for x in values)
    return KernelConfig(rows, block_n or None, warps, stages, heads)


def forward_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                 window: int, causal: bool, scale: float, mode: str, fwd_config: list[int],
                 bwd_config: list[int], deterministic: bool, keep_fp32: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor, torch.Tensor]:
    """``(o, lse, o32, e, idx, start, count)``: the output, its lse, o in fp32 for the backward
    (empty unless ``keep_fp32`` and q is not fp32) and the plan's tensors."""
    fwd_cfg = _cfg(fwd_config)
    # s in any float dtype: the kernels read it as fp32 (no copy)
    q, k, v, s = q.contiguous(), k.contiguous(), v.contiguous(), s.contiguous()
    GH, bq = tile_shape(fwd_cfg, q.shape[1] // k.shape[1], q.shape[2])
    plan = build_plan(s, window, q.shape[2], causal=causal, mode=mode, block_q=bq,
                      lists=True if deterministic else None)
    o, lse, o32 = dma_forward(q, k, v, s, plan, scale, fwd_cfg, GH, keep_fp32=keep_fp32)
    if o32 is o:
        o32 = torch.empty(0, dtype=torch.float32, device=q.device)
    # (Outputs of a custom operator may not alias: build_plan gives each empty part its own.)
    return o, lse, o32, plan.e, plan.idx, plan.start, plan.count


attention_fwd = torch.library.custom_op("dma_ref::attention_fwd", forward_impl, mutates_args=())


@attention_fwd.register_fake
def _(q, k, v, s, window, causal, scale, mode, fwd_config, bwd_config, deterministic, keep_fp32):
    """The outputs' shapes and dtypes from the inputs' alone (no size depends on the scores)."""
    B, Hq, Q, _D = q.shape
    Hkv, K = k.shape[1], k.shape[2]
    _GH, bq = tile_shape(_cfg(fwd_config), Hq // Hkv, Q)
    _dense, shapes = plan_shapes(B * Hkv, K, Q, window, causal=causal, block_q=bq,
                                 lists=True if deterministic else None)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = q.new_empty((B, Hq, Q), dtype=torch.float32)
    o32 = q.new_empty(tuple(q.shape) if keep_fp32 and q.dtype != torch.float32 else (0,),
                      dtype=torch.float32)
    plan = [q.new_empty(shape, dtype=dtype) for shape, dtype in shapes.values()]
    return (o, lse, o32, *plan)


def backward_impl(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  s: torch.Tensor, o32: torch.Tensor, lse: torch.Tensor,
                  dlse: torch.Tensor | None, e: torch.Tensor, idx: torch.Tensor,
                  start: torch.Tensor, count: torch.Tensor, window: int, causal: bool, mode: str,
                  fwd_config: list[int], bwd_config: list[int], scale: float, deterministic: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv, ds)`` in the dtypes of q, k, v, s."""
    Q = q.shape[2]
    G = q.shape[1] // k.shape[1]
    _GH, bq_f = tile_shape(_cfg(fwd_config), G, Q)
    plan = KeyPlan(causal=causal, dense=idx.numel() == 0, window=window, block_q=bq_f,
                   n_qb=cdiv(Q, bq_f), e=e, idx=idx, start=start, count=count)
    bwd_cfg = _cfg(bwd_config)
    GH, bq = tile_shape(bwd_cfg, G, Q)
    s = s.contiguous()
    plan = replan(plan, Q, bq, s, mode)
    dlse = None if dlse is None else dlse.to(torch.float32).contiguous()
    dq, dk, dv, ds = dma_backward(do.contiguous(), q.contiguous(), k.contiguous(),
                                  v.contiguous(), s, o32, lse, plan, scale, bwd_cfg,
                                  GH, deterministic, dlse)
    return dq, dk.to(k.dtype), dv.to(v.dtype), ds.to(s.dtype)


attention_bwd = torch.library.custom_op("dma_ref::attention_bwd", backward_impl, mutates_args=())


@attention_bwd.register_fake
def _(do, q, k, v, s, o32, lse, dlse, e, idx, start, count, window, causal, mode, fwd_config,
      bwd_config, scale, deterministic):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format),
            torch.empty_like(s, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    q, k, v, s, window, causal, scale, mode, fwd_config, bwd_config, deterministic, _ = inputs
    o, lse, o32, e, idx, start, count = output
    # fp32 inputs: o itself is the fp32 output the backward's Delta needs.
    ctx.save_for_backward(q, k, v, s, o32 if o32.numel() else o, lse, e, idx, start, count)
    ctx.args = (window, causal, mode, fwd_config, bwd_config, scale, deterministic)
    ctx.mark_non_differentiable(o32, e, idx, start, count)
    ctx.set_materialize_grads(False)          # no zero tensors for gradients nobody sends


def _grads(ctx, do, dlse, bwd):
    q, k, v, s, o32, lse, e, idx, start, count = ctx.saved_tensors
    if do is None:                            # the loss reads lse only
        do = torch.zeros_like(q)
    dq, dk, dv, ds = bwd(do, q, k, v, s, o32, lse, dlse, e, idx, start, count, *ctx.args)
    return dq, dk, dv, ds, None, None, None, None, None, None, None, None


attention_fwd.register_autograd(lambda ctx, do, dlse, *_: _grads(ctx, do, dlse, attention_bwd),
                                setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The same forward and backward outside ``torch.compile``, without the custom operators'
    dispatch (tens of microseconds of host time per call, which small calls feel)."""

    @staticmethod
    def forward(ctx, *inputs):
        output = forward_impl(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, do, dlse, *_unused):
        return _grads(ctx, do, dlse, backward_impl)


def dma_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                  window: int, *, causal: bool = True, scale: float | None = None,
                  mode: str = "row", return_lse: bool = False,
                  fwd_config: KernelConfig | None = None, bwd_config: KernelConfig | None = None,
                  deterministic: bool = False, check_values: bool | None = None):
    """Dynamic Mask Attention with Triton kernels; differentiable in q, k, v and s.

    q ``[B, Hq, Q, D]``; k, v ``[B, Hkv, K, D]`` (Hq = G * Hkv); s ``[B, Hkv, K]`` (any float
    dtype; used in fp32); ``Q <= K``, query row i at position ``K - Q + i``; D any multiple of 8
    from 8 to 256; q, k, v in fp16, bf16 or fp32. ``window`` = w, ``mode`` "row" or
    "global", ``scale`` defaults to ``D ** -0.5``. Returns o ``[B, Hq, Q, D]`` in q's dtype (and
    ``lse [B, Hq, Q]`` fp32, natural log, with ``return_lse``; both are differentiable). Equals
    ``dma_ref.naive_dma_attention``; rows with no kept key give ``o = 0`` and ``lse = -inf``.
    dk, dv and ds are accumulated with fp32 atomic adds: their last bits vary between runs.
    ``deterministic=True`` makes them bit-reproducible (partial sums per query block, reduced in
    a fixed order; extra memory ~ 2 G Q (w + BLOCK_Q) D / (GH BLOCK_Q) fp32 per KV head, GH the
    query heads packed per program, and slower); it needs w < K.

    ``check_values``: reject NaN or +inf scores with a ``ValueError``. That check reads s back to
    the host (a synchronisation, which stalls the launch queue and cannot be captured in a CUDA
    graph), so the default (None) checks on the CPU and skips on CUDA and under
    ``torch.compile``. Unchecked, a NaN or +inf score ranks first and turns every row that keeps
    it into NaN: never a silent wrong value.
    Shapes, dtypes and devices are always checked (on the host, for free).

    With ``dense_sdpa.DENSE_VIA_SDPA = True`` the dense regime (``w >= K``, causal, ``Q == K``,
    bf16 on CUDA, D <= 128, no lse, no forced tile) runs as fused causal attention with the
    scores folded into two extra head columns (``dense_sdpa.py``: cuDNN on the H200); off by
    default until its speed is measured there.

    No host synchronisation, no data-dependent sizes (``deterministic=True`` included): the call
    can be captured in a CUDA graph (after one warm-up call, which autotunes the kernels) and
    traced by ``torch.compile`` without
    a graph break (two custom operators, ``dma_ref::attention_fwd`` and ``attention_bwd``; eager
    calls run the same functions through a plain ``autograd.Function``).
    """
    B, Hq, Hkv, Q, K, D = check_qkv(q, k, v, q_le_k=True)
    if q.dtype not in DTYPES:
        raise TypeError(f"dma_attention supports q, k, v in float16, bfloat16 or float32; got "
                        f"{q.dtype} (use dma_ref.naive_dma_attention for {q.dtype})")
    if check_values is None:      # traced by torch.compile: no data-dependent Python branch
        check_values = q.device.type != "cuda" and not torch.compiler.is_compiling()
    check_flag(check_values, "check_values")
    check_scores(s, B, Hkv, K, q.device, values=check_values)
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
                         f"use a multiple of 8 from 8 to 256")
    if not on_triton(q):
        raise RuntimeError(f"q is on {q.device}: the Triton kernels need a CUDA device, or "
                           "TRITON_INTERPRET=1 set before dma_ref.kernels is imported "
                           "(call dma_ref.setup_device() first)")
    interp = launch.interpreting()
    fwd_cfg = fwd_config or (INTERP_CONFIG if interp else
                             fit_config(FWD_CONFIG, D, q.dtype, backward=False))
    bwd_cfg = bwd_config or (INTERP_CONFIG if interp else
                             fit_config(BWD_CONFIG, D, q.dtype, backward=True))
    if q.numel() == 0 or K == 0:
        o = torch.zeros_like(q) + 0 * (k.sum() + v.sum() + s.sum())
        lse = torch.full((B, Hq, Q), float("-inf"), dtype=torch.float32, device=q.device)
        return (o, lse) if return_lse else o
    if dense_sdpa.applies(q, k, w, causal=causal, return_lse=return_lse,
                          forced_config=fwd_config is not None or bwd_config is not None):
        return dense_sdpa.dense_dma_sdpa(q, k, v, s, scale)
    keep_fp32 = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, s))
    fwd = attention_fwd if torch.compiler.is_compiling() else _Eager.apply
    o, lse, *_ = fwd(q, k, v, s, w, causal, scale, mode, _cfg_list(fwd_cfg), _cfg_list(bwd_cfg),
                     deterministic, keep_fp32)
    return (o, lse) if return_lse else o
