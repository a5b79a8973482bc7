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

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

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
from .blocks import KeyPlan, block_key_lists, build_plan, plan_shapes
from .forward import LOG2E, dma_fwd_kernel
from .hostmath import cdiv, next_pow2
from .lifetimes import _on_triton, rank_keys, thresholds_unchecked

__all__ = [
    "BWD_CONFIG",
    "FWD_CONFIG",
    "HEAD_DIMS",
    "KernelConfig",
    "dma_attention",
    "dma_backward",
    "dma_forward",
]

# Every multiple of 8 up to 256, as FlashAttention and SDPA take (the kernels pad to a power of two).
HEAD_DIMS = tuple(range(8, 257, 8))
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class KernelConfig:
    """Launch shape: ``rows`` = GH * BLOCK_Q packed query rows per program (GH = query heads of
    one KV group packed together, at most ``max_heads``), ``block_n`` keys per tile.
    ``block_n=None``: ``block_n``, ``num_warps`` and ``num_stages`` are autotuned on CUDA
    (``FWD_TUNING`` / ``BWD_TUNING``); under the interpreter they come from ``INTERP_CONFIG``."""

    rows: int = 128
    block_n: int | None = None
    num_warps: int = 4
    num_stages: int = 3
    max_heads: int = 8


FWD_CONFIG = KernelConfig(rows=128)
BWD_CONFIG = KernelConfig(rows=128)
# The interpreter runs programs one after another in NumPy: small tiles keep tests fast.
INTERP_CONFIG = KernelConfig(rows=32, block_n=16, num_warps=1, num_stages=1, max_heads=4)
# Autotuning candidates on CUDA: (BLOCK_N, num_warps, num_stages, split). ``split`` = 2 packs
# half the query heads per program (GH / 2: M = 64 rows instead of 128) with the same key lists.
# scripts/compile_sm90.py (D = 128, bf16, sm_90) reports the registers of each: with 4 warps
# the 128 rows use all 255 and spill ~130 bytes per thread (forward and backward); with 8 warps
# the forward needs ~220 and the backward spills ~130 (64 rows: ~80). The 2026-11 defaults
# (forward 32/4/3, backward 64/8/1) are among the candidates. The backward's 64/8/2 (two stages:
# the next K/V tile loads while this one computes) was 12-14% faster than 64/8/1 at N = 16K and
# 128K on the H200 (scripts/sweep_tiles.py, 2026-12-03) and the tuner picks it there.
FWD_TUNING = ((64, 8, 3, 1), (32, 8, 3, 1), (128, 8, 2, 1), (32, 4, 3, 1), (64, 8, 3, 2))
BWD_TUNING = ((64, 8, 2, 1), (64, 8, 1, 1), (32, 8, 1, 1), (32, 8, 1, 2), (64, 8, 1, 2),
              (32, 4, 1, 2))


def _padded(D: int) -> int:
    """The head dim the kernels compute with: a power of two, at least 16 (``tl.dot``)."""
    return max(16, next_pow2(D))


@functools.cache
def _fit(cfg: KernelConfig, D: int, elt_bytes: int, backward: bool) -> KernelConfig:
    """Shrink the tiles for wide rows: shared memory grows with rows x D x element size (the
    backward holds q, dO and fp32 dQ; fp16's backward uses fp32 operands). Measured on the H200:
    bf16 D=256 fits 128 rows forward; the fp16 backward at D=256 with 128 rows needed 320 KB."""
    D = _padded(D)
    budget = (32768 if backward else 65536) // (D * elt_bytes)
    rows = max(16, min(cfg.rows, next_pow2(budget) if budget >= 16 else 16))
    block_n = cfg.block_n
    if backward and block_n is not None:
        block_n = max(16, min(block_n, 16384 // (D * elt_bytes)))
    return replace(cfg, rows=rows, block_n=block_n)


def _elt_bytes(dtype: torch.dtype, backward: bool) -> int:
    return 4 if dtype == torch.float32 or (backward and dtype == torch.float16) else 2


def _shape(cfg: KernelConfig, G: int, Q: int) -> tuple[int, int]:
    """(GH, BLOCK_Q): heads packed per program and query positions per block (M >= 16)."""
    GH = min(next_pow2(G), cfg.max_heads)
    bq = max(1, cfg.rows // GH)
    bq = min(bq, next_pow2(Q))              # decoding: do not pad Q = 1 to 128 rows
    bq = max(bq, -(-16 // GH))                           # tl.dot needs M = GH * BLOCK_Q >= 16
    return GH, next_pow2(bq)


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _warps(cfg: KernelConfig, GH: int, block_q: int) -> int:
    """Fewer warps for small row blocks (decoding): 8 warps on 16 rows only add overhead."""
    return cfg.num_warps if GH * block_q >= 64 else min(cfg.num_warps, 4)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


# ------------------------------------------------------------------------------ autotuning

def _candidates(name: str) -> list:
    tuning = FWD_TUNING if name == "fwd" else BWD_TUNING
    return [triton.Config({"BLOCK_N": n, "SPLIT": split}, num_warps=w, num_stages=s)
            for n, w, s, split in tuning]


# Shared memory a program may use on the H200 (227 KB), less a margin for Triton's scratch.
SMEM_BYTES = 220 * 1024


def _smem(block_n: int, rows: int, D: int, elt: int, stages: int, backward: bool) -> int:
    """Estimated shared memory of a candidate: the K and V tiles of every pipeline stage, plus
    the row tiles (q; backward: q, dO and the layout conversions of dS). Fitted to the sizes
    ``scripts/compile_sm90.py`` reports for D = 128 (exact for the forward; an upper bound for
    the backward); compiled at D = 160 the first candidate needed 262 KB, as predicted."""
    return 2 * block_n * D * elt * max(stages, 1) + (4 if backward else 1) * rows * D * elt


def _prune(configs, named_args, **kwargs):
    """The candidates for one launch, with the head packing made concrete (``GH`` = the
    call's ``GH_MAX`` / split). Dropped: tiles whose shared memory (``_smem``) exceeds
    ``SMEM_BYTES`` or whose K/V rows are wider than the 2026-11 measurements allowed (BLOCK_N x
    D x bytes over 32 KB forward, 16 KB backward), and 8 warps on fewer than 64 rows (overhead
    only)."""
    D = kwargs["HEAD_DP"]
    backward = "DS_F32" in kwargs
    elt = 4 if named_args["Qp"].dtype == torch.float32 or kwargs.get("DS_F32") else 2
    limit = max(16, (16384 if backward else 32768) // (D * elt))
    kept, seen = [], set()
    for c in configs:
        GH = max(1, kwargs["GH_MAX"] // c.kwargs["SPLIT"])
        rows = GH * kwargs["BLOCK_Q"]
        key = (c.kwargs["BLOCK_N"], GH, c.num_warps, c.num_stages)
        too_big = _smem(c.kwargs["BLOCK_N"], rows, D, elt, c.num_stages, backward) > SMEM_BYTES
        if (c.kwargs["BLOCK_N"] > limit or too_big or rows < 16
                or (rows < 64 and c.num_warps > 4) or key in seen):
            continue
        seen.add(key)
        kept.append(triton.Config({"BLOCK_N": c.kwargs["BLOCK_N"], "GH": GH},
                                  num_warps=c.num_warps, num_stages=c.num_stages))
    return kept or [_smallest_tile(kwargs["GH_MAX"])]


def _smallest_tile(GH: int):
    """The tile used when no candidate fits (tiny or very wide shapes)."""
    return triton.Config({"BLOCK_N": 16, "GH": GH}, num_warps=4, num_stages=1)


class _Tuner(triton.runtime.Autotuner):
    """Triton's autotuner, with the candidates compiled in parallel threads before the first
    timing of a key (Triton's compiler releases the GIL: on the 16-core GPU host this turns
    ~5 x 8 s of compilation per kernel variant into ~10 s) and the ``GH_MAX`` hint dropped
    before launching (the config's ``GH`` replaces it)."""

    def run(self, *args, **kwargs):
        gh_max = kwargs.pop("GH_MAX")
        self._gh_max = gh_max
        return super().run(*args, **kwargs)

    def prune_configs(self, kwargs):
        configs = _prune(self.configs, self.nargs, **kwargs, GH_MAX=self._gh_max)
        args = list(self.nargs.values())
        meta = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}

        def warm(c):
            self.fn.warmup(*args, grid=(1, 1, 1), **meta, **c.all_kwargs())

        warm(configs[0])                  # first in this thread: Triton's per-device caches
        with ThreadPoolExecutor(max(1, min(len(configs) - 1, os.cpu_count() or 1))) as pool:
            list(pool.map(warm, configs[1:]))
        return configs


_TUNED: dict[str, _Tuner] = {}
# The variant of each kernel, the number of query heads per KV head, its size class (log2 of
# the query-block count: decoding and prefill get their own tiles, a new K does not re-tune)
# and the dtypes (added by Triton) make the tuning key.
_KEY = ["HEAD_DP", "G", "BLOCK_Q", "CAUSAL", "DENSE", "USE_E", "PREC", "SIZE_CLASS"]


def _tuned(name: str) -> _Tuner:
    """The autotuned launcher of ``dma_fwd_kernel`` / ``dma_bwd_kernel`` (built on first use:
    the interpreter never needs it)."""
    if name not in _TUNED:
        kernel = dma_fwd_kernel if name == "fwd" else dma_bwd_kernel
        key = _KEY if name == "fwd" else _KEY + ["DETERMINISTIC", "HAS_DLSE"]
        # The backward's atomics accumulate into DK, DV, DS: zero them before every timed run.
        reset = None if name == "fwd" else ["DK", "DV", "DS"]
        _TUNED[name] = _Tuner(kernel, kernel.arg_names, _candidates(name), key, reset, None)
    return _TUNED[name]


def _launch(kernel, name: str, cfg: KernelConfig, GH: int, n_qb: int, BH: int, G: int,
            args: tuple, consts: dict, tune: bool = True) -> None:
    """Launch ``kernel`` over ``(n_qb, BH * ceil(G / GH))`` programs: with the config's tile,
    or autotuned (``cfg.block_n`` None on CUDA, ``tune``): BLOCK_N, warps, stages and the head
    packing (GH or GH / 2). Under the interpreter ``INTERP_CONFIG``'s tile; with
    ``DMA_REF_AUTOTUNE=0`` in the environment the first candidate that fits (tests that compile
    many shapes; the tuning's own test runs every candidate)."""
    if cfg.block_n is None and not _interpreting():
        if tune and os.environ.get("DMA_REF_AUTOTUNE", "1") != "0":
            grid = lambda meta: (n_qb, BH * cdiv(G, meta["GH"]))
            _tuned(name)[grid](*args, **consts, GH_MAX=GH)
            return
        fits = _prune(_candidates(name), {"Qp": args[0]}, **consts, GH_MAX=GH)
        if not tune:                       # the head packing is fixed: keep tiles sized for it
            fits = [c for c in fits if c.kwargs["GH"] == GH] or [_smallest_tile(GH)]
        first = fits[0]
        GH = first.kwargs["GH"]
        meta = {"BLOCK_N": first.kwargs["BLOCK_N"], "num_warps": first.num_warps,
                "num_stages": first.num_stages}
    else:
        cfg = INTERP_CONFIG if cfg.block_n is None else cfg
        meta = {"BLOCK_N": cfg.block_n, "num_warps": _warps(cfg, GH, consts["BLOCK_Q"]),
                "num_stages": cfg.num_stages}
    kernel[(n_qb, BH * cdiv(G, GH))](*args, **consts, GH=GH, **meta)


def _scores32(s: torch.Tensor) -> torch.Tensor:
    """s in fp32 for the kernels. Gathered 2-byte loads of bf16 scores made the forward kernel
    40% slower on the H200 (0.463 vs 0.328 ms at N = 16K, 3.52 vs 2.47 ms at 128K, same tile,
    2026-12-03): a copy of K floats per head costs a few microseconds."""
    return s if s.dtype == torch.float32 else s.float()


def dma_forward(q, k, v, s, plan: KeyPlan, scale: float, cfg: KernelConfig, GH: int,
                keep_fp32: bool = False):
    """Launch the forward (s ``[B, Hkv, K]`` contiguous, any float dtype). Returns ``(o [B, Hq, Q, D] in q's dtype, lse [B, Hq, Q] fp32, o32)``;
    ``o32`` is o in fp32 when ``keep_fp32`` and q is not fp32 (for the backward's Delta), else o.
    GH: query heads packed per program (at most; the autotuner may halve it)."""
    s = _scores32(s)
    B, Hq, Q, D = q.shape
    Hkv, K = k.shape[1], k.shape[2]
    G = Hq // Hkv
    o = torch.empty_like(q)
    store32 = keep_fp32 and q.dtype != torch.float32
    o32 = torch.empty(q.shape, dtype=torch.float32, device=q.device) if store32 else o
    lse = torch.empty(B, Hq, Q, dtype=torch.float32, device=q.device)
    consts = {"BLOCK_Q": plan.block_q, "HEAD_D": D, "HEAD_DP": _padded(D), "CAUSAL": plan.causal,
              "DENSE": plan.dense, "USE_E": plan.use_e, "PREC": _prec(q.dtype),
              "STORE_O32": store32}
    args = (q, k, v, s, plan.e, plan.idx, plan.start, plan.count, o, o32, lse,
            Q, K, G, plan.n_qb, scale * LOG2E, plan.n_qb.bit_length())
    _launch(dma_fwd_kernel, "fwd", cfg, GH, plan.n_qb, B * Hkv, G, args, consts)
    return o, lse, o32


def dma_backward(do, q, k, v, s, o, lse, plan: KeyPlan, scale: float, cfg: KernelConfig,
                 GH: int, deterministic: bool = False, dlse: torch.Tensor | None = None):
    """Launch the backward. Returns ``(dq, dk32, dv32, ds32)``; dk, dv, ds in fp32.

    o: the forward output in fp32 (``dma_forward(..., keep_fp32=True)``) for an accurate Delta
    (computed inside the kernel).
    ``deterministic``: partial buffers and a fixed-order reduction instead of atomic adds
    (sparse plans only; see backward.py; its head packing is not tuned, the partial rows
    depend on it). ``dlse``: the gradient of lse ``[B, Hq, Q]``, if any."""
    B, Hq, Q, D = q.shape
    Hkv, K = k.shape[1], k.shape[2]
    G = Hq // Hkv
    n_hg = -(-G // GH)
    s = _scores32(s)
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
    consts = {"BLOCK_Q": plan.block_q, "HEAD_D": D, "HEAD_DP": _padded(D), "CAUSAL": plan.causal,
              "DENSE": plan.dense, "USE_E": plan.use_e, "PREC": _prec(q.dtype),
              "DS_F32": q.dtype == torch.float16, "DETERMINISTIC": deterministic,
              "HAS_DLSE": dlse is not None}
    args = (q, k, v, s, plan.e, plan.idx, plan.start, plan.count, do, lse,
            lse if dlse is None else dlse, o, dq,
            *((pk, pv, ps) if deterministic else (dk, dv, ds)),
            Q, K, G, plan.n_qb, scale * LOG2E, scale, list_w, plan.n_qb.bit_length())
    _launch(dma_bwd_kernel, "bwd", cfg, GH, plan.n_qb, B * Hkv, G, args, consts,
            tune=not deterministic)
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
                                      HEAD_D=D, HEAD_DP=_padded(D), num_warps=1)


def _replan(plan: KeyPlan, Q: int, block_q: int, s: torch.Tensor, mode: str) -> KeyPlan:
    """The same selection with key lists for another query block size (the backward's tile
    may hold fewer rows than the forward's); s ``[B, Hkv, K]`` is ranked again for them."""
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
    ranks = rank_keys(s)
    theta = thresholds_unchecked(ranks, plan.window) if mode == "row" else None
    idx, start, count = block_key_lists(ranks, theta, Q, block_q, plan.window)
    return KeyPlan(True, False, plan.window, block_q, n_qb, plan.e, idx, start, count)


# ------------------------------------------------------------------- the custom operators
#
# Configs travel as int lists [rows, block_n (0: autotuned), num_warps, num_stages, max_heads]:
# custom operators take plain types only.


def _cfg_list(cfg: KernelConfig) -> list[int]:
    return [cfg.rows, cfg.block_n or 0, cfg.num_warps, cfg.num_stages, cfg.max_heads]


def _cfg(values) -> KernelConfig:
    rows, block_n, warps, stages, heads = (int(x) for x in values)
    return KernelConfig(rows, block_n or None, warps, stages, heads)


def _fwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, window: int,
              causal: bool, scale: float, mode: str, fwd_config: list[int], bwd_config: list[int],
              deterministic: bool, keep_fp32: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                         torch.Tensor, torch.Tensor]:
    """``(o, lse, o32, e, idx, start, count)``: the output, its lse, o in fp32 for the backward
    (empty unless ``keep_fp32`` and q is not fp32) and the plan's tensors."""
    fwd_cfg = _cfg(fwd_config)
    # s in any float dtype: the kernels read it as fp32 (no copy)
    q, k, v, s = q.contiguous(), k.contiguous(), v.contiguous(), s.contiguous()
    GH, bq = _shape(fwd_cfg, q.shape[1] // k.shape[1], q.shape[2])
    plan = build_plan(s, window, q.shape[2], causal=causal, mode=mode, block_q=bq,
                      lists=True if deterministic else None)
    o, lse, o32 = dma_forward(q, k, v, s, plan, scale, fwd_cfg, GH, keep_fp32=keep_fp32)
    if o32 is o:
        o32 = torch.empty(0, dtype=torch.float32, device=q.device)
    # (Outputs of a custom operator may not alias: build_plan gives each empty part its own.)
    return o, lse, o32, plan.e, plan.idx, plan.start, plan.count


_attention_fwd = torch.library.custom_op("dma_ref::attention_fwd", _fwd_impl, mutates_args=())


@_attention_fwd.register_fake
def _(q, k, v, s, window, causal, scale, mode, fwd_config, bwd_config, deterministic, keep_fp32):
    """The outputs' shapes and dtypes from the inputs' alone (no size depends on the scores)."""
    B, Hq, Q, _D = q.shape
    Hkv, K = k.shape[1], k.shape[2]
    _GH, bq = _shape(_cfg(fwd_config), Hq // Hkv, Q)
    _dense, shapes = plan_shapes(B * Hkv, K, Q, window, causal=causal, block_q=bq,
                                 lists=True if deterministic else None)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = q.new_empty((B, Hq, Q), dtype=torch.float32)
    o32 = q.new_empty(tuple(q.shape) if keep_fp32 and q.dtype != torch.float32 else (0,),
                      dtype=torch.float32)
    plan = [q.new_empty(shape, dtype=dtype) for shape, dtype in shapes.values()]
    return (o, lse, o32, *plan)


def _bwd_impl(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              s: torch.Tensor, o32: torch.Tensor, lse: torch.Tensor, dlse: torch.Tensor | None,
              e: torch.Tensor, idx: torch.Tensor, start: torch.Tensor, count: torch.Tensor,
              window: int, causal: bool, mode: str, fwd_config: list[int], bwd_config: list[int],
              scale: float, deterministic: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv, ds)`` in the dtypes of q, k, v, s."""
    Q = q.shape[2]
    G = q.shape[1] // k.shape[1]
    _GH, bq_f = _shape(_cfg(fwd_config), G, Q)
    plan = KeyPlan(causal, idx.numel() == 0, window, bq_f, -(-Q // bq_f), e, idx, start, count)
    bwd_cfg = _cfg(bwd_config)
    GH, bq = _shape(bwd_cfg, G, Q)
    s = s.contiguous()
    plan = _replan(plan, Q, bq, s, mode)
    dlse = None if dlse is None else dlse.to(torch.float32).contiguous()
    dq, dk, dv, ds = dma_backward(do.contiguous(), q.contiguous(), k.contiguous(),
                                  v.contiguous(), s, o32, lse, plan, scale, bwd_cfg,
                                  GH, deterministic, dlse)
    return dq, dk.to(k.dtype), dv.to(v.dtype), ds.to(s.dtype)


_attention_bwd = torch.library.custom_op("dma_ref::attention_bwd", _bwd_impl, mutates_args=())


@_attention_bwd.register_fake
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


_attention_fwd.register_autograd(lambda ctx, do, dlse, *_: _grads(ctx, do, dlse, _attention_bwd),
                                 setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The same forward and backward outside ``torch.compile``, without the custom operators'
    dispatch (about 30 us of host time per call measured on the CPU: at N = 4K the host, not
    the GPU, sets the pace)."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _fwd_impl(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, do, dlse, *_unused):
        return _grads(ctx, do, dlse, _bwd_impl)


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
    graph), so the default (None) checks on the CPU and skips on CUDA and under ``torch.compile``. Unchecked, a NaN or +inf
    score ranks first and turns every row that keeps it into NaN: never a silent wrong value.
    Shapes, dtypes and devices are always checked (on the host, for free).

    No host synchronisation, no data-dependent sizes: the call can be captured in a CUDA graph
    (after one warm-up call, which autotunes the kernels) and traced by ``torch.compile`` without
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
    if not _on_triton(q):
        raise RuntimeError(f"q is on {q.device}: the Triton kernels need a CUDA device, or "
                           "TRITON_INTERPRET=1 set before dma_ref.kernels is imported "
                           "(call dma_ref.setup_device() first)")
    interp = _interpreting()
    fwd_cfg = fwd_config or (INTERP_CONFIG if interp else
                             _fit(FWD_CONFIG, D, _elt_bytes(q.dtype, False), False))
    bwd_cfg = bwd_config or (INTERP_CONFIG if interp else
                             _fit(BWD_CONFIG, D, _elt_bytes(q.dtype, True), True))
    if q.numel() == 0 or K == 0:
        o = torch.zeros_like(q) + 0 * (k.sum() + v.sum() + s.sum())
        lse = torch.full((B, Hq, Q), float("-inf"), dtype=torch.float32, device=q.device)
        return (o, lse) if return_lse else o
    keep_fp32 = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, s))
    fwd = _attention_fwd if torch.compiler.is_compiling() else _Eager.apply
    o, lse, *_ = fwd(q, k, v, s, w, causal, scale, mode, _cfg_list(fwd_cfg), _cfg_list(bwd_cfg),
                     deterministic, keep_fp32)
    return (o, lse) if return_lse else o
