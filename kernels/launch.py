"""How the kernels are launched: tile shapes, their fit to shared memory, and autotuning.

``KernelConfig`` is a launch shape; ``fit_config`` shrinks it for wide head dims, ``tile_shape``
turns it into (heads packed per program, query positions per block). On CUDA ``launch`` runs
Triton's autotuner (``Tuner``: candidates compiled in parallel, pruned to what fits in shared
memory) over ``FWD_TUNING`` / ``BWD_TUNING``; under the interpreter it uses ``INTERP_CONFIG``.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import torch
import triton

from dma_ref.numerics import cdiv, next_pow2

# Every multiple of 8 up to 256, as FlashAttention and SDPA take (the kernels pad to a power of
# two).
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
# Why these: scripts/compile_sm90.py's registers and spills, and the H200 sweeps recorded in
# figures/bench/PERF_NOTES.md ("Tuning candidates").
FWD_TUNING = ((64, 8, 3, 1), (32, 8, 3, 1), (128, 8, 2, 1), (32, 4, 3, 1), (64, 8, 3, 2))
BWD_TUNING = ((64, 8, 2, 1), (64, 8, 1, 1), (32, 8, 1, 1), (32, 8, 1, 2), (64, 8, 1, 2),
              (32, 4, 1, 2))


def padded_head_dim(D: int) -> int:
    """The head dim the kernels compute with: a power of two, at least 16 (``tl.dot``)."""
    return max(16, next_pow2(D))


def element_bytes(dtype: torch.dtype, backward: bool) -> int:
    """Bytes per element of the tiles in shared memory: fp32 inputs, and the fp16 backward
    (which computes dS and its products in fp32), take 4; fp16/bf16 otherwise 2."""
    return 4 if dtype == torch.float32 or (backward and dtype == torch.float16) else 2


def max_block_n(D: int, elt: int, backward: bool) -> int:
    """The widest K/V tile (keys) for padded head dim D: BLOCK_N x D x bytes within 32 KB
    forward, 16 KB backward (the sizes the H200 measurements allowed), at least 16."""
    return max(16, (16384 if backward else 32768) // (D * elt))


@functools.cache
def fit_config(cfg: KernelConfig, D: int, dtype: torch.dtype, *, backward: bool) -> KernelConfig:
    """Shrink the tiles for wide rows: shared memory grows with rows x D x element size (the
    backward holds q, dO and fp32 dQ; fp16's backward uses fp32 operands). The budgets come
    from H200 runs at D = 256 (figures/bench/PERF_NOTES.md, "Tuning candidates")."""
    D = padded_head_dim(D)
    elt = element_bytes(dtype, backward)
    budget = (32768 if backward else 65536) // (D * elt)
    rows = max(16, min(cfg.rows, next_pow2(budget) if budget >= 16 else 16))
    block_n = cfg.block_n
    if backward and block_n is not None:
        block_n = max(16, min(block_n, max_block_n(D, elt, backward)))
    return replace(cfg, rows=rows, block_n=block_n)


def tile_shape(cfg: KernelConfig, G: int, Q: int) -> tuple[int, int]:
    """(GH, BLOCK_Q): heads packed per program and query positions per block (M >= 16)."""
    GH = min(next_pow2(G), cfg.max_heads)
    bq = max(1, cfg.rows // GH)
    bq = min(bq, next_pow2(Q))              # decoding: do not pad Q = 1 to 128 rows
    bq = max(bq, cdiv(16, GH))                           # tl.dot needs M = GH * BLOCK_Q >= 16
    return GH, next_pow2(bq)


def precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision for inputs of ``dtype``: "ieee" (fp32 products) for fp32,
    "tf32" for fp16 and bf16."""
    return "ieee" if dtype == torch.float32 else "tf32"


def warps_for(cfg: KernelConfig, GH: int, block_q: int) -> int:
    """Fewer warps for small row blocks (decoding): 8 warps on 16 rows only add overhead."""
    return cfg.num_warps if GH * block_q >= 64 else min(cfg.num_warps, 4)


def interpreting() -> bool:
    """Whether the Triton interpreter runs the kernels (``TRITON_INTERPRET=1``, set by
    ``dma_ref.setup_device()`` on a CPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


# ------------------------------------------------------------------------------ autotuning

def candidates(name: str) -> list:
    """``FWD_TUNING`` (``name == "fwd"``) or ``BWD_TUNING`` as ``triton.Config`` objects."""
    tuning = FWD_TUNING if name == "fwd" else BWD_TUNING
    return [triton.Config({"BLOCK_N": n, "SPLIT": split}, num_warps=w, num_stages=s)
            for n, w, s, split in tuning]


# Shared memory a program may use on the H200 (227 KB), less a margin for Triton's scratch.
SMEM_BYTES = 220 * 1024


def smem_bytes(block_n: int, rows: int, D: int, elt: int, stages: int, backward: bool) -> int:
    """Estimated shared memory of a candidate: the K and V tiles of every pipeline stage, plus
    the row tiles (q; backward: q, dO and the layout conversions of dS). Fitted to the sizes
    ``scripts/compile_sm90.py`` reports for D = 128 (exact for the forward; an upper bound for
    the backward)."""
    return 2 * block_n * D * elt * max(stages, 1) + (4 if backward else 1) * rows * D * elt


def prune_configs(configs, named_args, **kwargs):
    """The candidates for one launch, with the head packing made concrete (``GH`` = the
    call's ``GH_MAX`` / split). Dropped: tiles whose shared memory (``smem_bytes``) exceeds
    ``SMEM_BYTES`` or whose K/V rows are wider than ``max_block_n`` allows, and 8 warps on fewer
    than 64 rows (overhead only)."""
    D = kwargs["HEAD_DP"]
    backward = "DS_F32" in kwargs
    elt = element_bytes(named_args["Qp"].dtype, backward)
    limit = max_block_n(D, elt, backward)
    kept, seen = [], set()
    for c in configs:
        GH = max(1, kwargs["GH_MAX"] // c.kwargs["SPLIT"])
        rows = GH * kwargs["BLOCK_Q"]
        key = (c.kwargs["BLOCK_N"], GH, c.num_warps, c.num_stages)
        too_big = smem_bytes(c.kwargs["BLOCK_N"], rows, D, elt, c.num_stages, backward) > SMEM_BYTES
        if (c.kwargs["BLOCK_N"] > limit or too_big or rows < 16
                or (rows < 64 and c.num_warps > 4) or key in seen):
            continue
        seen.add(key)
        kept.append(triton.Config({"BLOCK_N": c.kwargs["BLOCK_N"], "GH": GH},
                                  num_warps=c.num_warps, num_stages=c.num_stages))
    return kept or [smallest_tile(kwargs["GH_MAX"])]


def smallest_tile(GH: int):
    """The tile used when no candidate fits (tiny or very wide shapes)."""
    return triton.Config({"BLOCK_N": 16, "GH": GH}, num_warps=4, num_stages=1)


class Tuner(triton.runtime.Autotuner):
    """Triton's autotuner, with the candidates compiled in parallel threads before the first
    timing of a key (Triton's compiler releases the GIL: on the 16-core GPU host this turns
    ~5 x 8 s of compilation per kernel variant into ~10 s) and the ``GH_MAX`` hint dropped
    before launching (the config's ``GH`` replaces it)."""

    def run(self, *args, **kwargs):
        gh_max = kwargs.pop("GH_MAX")
        self._gh_max = gh_max
        return super().run(*args, **kwargs)

    def prune_configs(self, kwargs):
        configs = prune_configs(self.configs, self.nargs, **kwargs, GH_MAX=self._gh_max)
        args = list(self.nargs.values())
        meta = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}

        def warm(c):
            self.fn.warmup(*args, grid=(1, 1, 1), **meta, **c.all_kwargs())

        warm(configs[0])                  # first in this thread: Triton's per-device caches
        with ThreadPoolExecutor(max(1, min(len(configs) - 1, os.cpu_count() or 1))) as pool:
            list(pool.map(warm, configs[1:]))
        return configs


TUNERS: dict[str, Tuner] = {}              # "fwd", "bwd": built on first use
# The variant of each kernel, the number of query heads per KV head, its size class (log2 of
# the query-block count: decoding and prefill get their own tiles, a new K does not re-tune)
# and the dtypes (added by Triton) make the tuning key.
TUNING_KEY = ["HEAD_DP", "G", "BLOCK_Q", "CAUSAL", "DENSE", "USE_E", "PREC", "SIZE_CLASS"]


def tuner(name: str, kernel) -> Tuner:
    """The autotuned launcher of ``kernel`` (``"fwd"``: dma_fwd_kernel, ``"bwd"``:
    dma_bwd_kernel), built on first use (the interpreter never needs one)."""
    if name not in TUNERS:
        key = TUNING_KEY if name == "fwd" else TUNING_KEY + ["DETERMINISTIC", "HAS_DLSE"]
        # The backward's atomics accumulate into DK, DV, DS: zero them before every timed run.
        reset = None if name == "fwd" else ["DK", "DV", "DS"]
        TUNERS[name] = Tuner(kernel, kernel.arg_names, candidates(name), key, reset, None)
    return TUNERS[name]


def launch(kernel, name: str, cfg: KernelConfig, GH: int, n_qb: int, BH: int, G: int,
           args: tuple, consts: dict, tune: bool = True) -> None:
    """Launch ``kernel`` over ``(n_qb, BH * ceil(G / GH))`` programs: with the config's tile,
    or autotuned (``cfg.block_n`` None on CUDA, ``tune``): BLOCK_N, warps, stages and the head
    packing (GH or GH / 2). Under the interpreter ``INTERP_CONFIG``'s tile; with
    ``DMA_REF_AUTOTUNE=0`` in the environment the first candidate that fits (tests that compile
    many shapes; the tuning's own test runs every candidate)."""
    if cfg.block_n is None and not interpreting():
        if tune and os.environ.get("DMA_REF_AUTOTUNE", "1") != "0":
            grid = lambda meta: (n_qb, BH * cdiv(G, meta["GH"]))
            tuner(name, kernel)[grid](*args, **consts, GH_MAX=GH)
            return
        fits = prune_configs(candidates(name), {"Qp": args[0]}, **consts, GH_MAX=GH)
        if not tune:                       # the head packing is fixed: keep tiles sized for it
            fits = [c for c in fits if c.kwargs["GH"] == GH] or [smallest_tile(GH)]
        first = fits[0]
        GH = first.kwargs["GH"]
        meta = {"BLOCK_N": first.kwargs["BLOCK_N"], "num_warps": first.num_warps,
                "num_stages": first.num_stages}
    else:
        cfg = INTERP_CONFIG if cfg.block_n is None else cfg
        meta = {"BLOCK_N": cfg.block_n, "num_warps": warps_for(cfg, GH, consts["BLOCK_Q"]),
                "num_stages": cfg.num_stages}
    kernel[(n_qb, BH * cdiv(G, GH))](*args, **consts, GH=GH, **meta)
