"""The project's benchmark: DMA's Triton kernel against every anchor, on the same inputs.

    python -m dma_ref.bench                                   # the full grid of DESIGN.md 6
    python -m dma_ref.bench --n 4096 16384 --window 1024 --d 128 --methods dma_triton sdpa_cudnn

Methods (one process, the same q, k, v, s for all of them):

==================== =======================================================================
``dma_triton``       ``dma_ref.kernels.dma_attention(q, k, v, s, w)``; the mask is built
                     inside the call and its time is included (the builder alone is timed
                     too and reported in the note)
``sdpa_cudnn``       SDPA, cuDNN backend, dense causal, no bias (independent of w)
``sdpa_flash``       SDPA, FlashAttention-2 backend, dense causal, no bias (independent of w)
``sdpa_efficient_bias`` SDPA, mem-efficient backend, dense additive bias ``s_j`` on kept
                     pairs and ``-inf`` elsewhere (the official repo's baseline)
``flex_blockmask``   compiled FlexAttention; BlockMask from the DMA mask in lifetime form
                     (``kv <= q < e[kv]``), ``s`` through ``score_mod``
``official_triton``  flash-sparse-attn 1.2.x Triton kernel with the DMA mask as a dense bool
                     ``[B, Hkv, N, N]`` tensor, when that package is importable
==================== =======================================================================

Each record has exactly the keys of ``RECORD_KEYS``. Times are medians of CUDA-event timings
(L2 flushed before each repetition) of a training-mode forward (inputs require grad) and of
forward + backward (gradients of q, k, v and, where the method supports it, s). ``peak_mem_bytes``
is the peak of ``torch.cuda.max_memory_allocated`` above what was allocated before the method
was prepared (so the shared inputs are excluded, and anything the method builds - masks,
biases, block masks, outputs, gradients - is included). A method that runs out of memory, is
predicted to exceed ``--time-cap``, or fails, is still recorded with null times and the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

METHODS = ("dma_triton", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient_bias", "flex_blockmask",
           "official_triton")
DENSE_METHODS = ("sdpa_cudnn", "sdpa_flash")           # no mask, no bias: independent of w
# Visits every tile whatever the mask (the mask lives in a dense bias): its cost does not depend
# on w, so from --once-from on it is measured at one window and recorded for the others.
W_INDEPENDENT = ("sdpa_efficient_bias",)
# Seen on the H200 (run 2, 2026-11-28): at N = 65536 (D = 128, w = 256) the official kernel
# raised "CUDA error: an illegal memory access", which poisons the CUDA context and ends the
# process. Its dense [B, H, N, N] mask has N^2 >= 2^31 elements there; int32 offset arithmetic
# overflowing is the likely cause (not proven). It is not launched at such N.
OFFICIAL_CRASH = {"official_triton": "error: CUDA illegal memory access at N=65536 (run 2); not "
                                     "launched when N^2 >= 2^31 (its [B,H,N,N] mask offsets "
                                     "likely overflow int32)"}
RECORD_KEYS = ("gpu", "torch", "triton", "B", "Hq", "Hkv", "D", "N", "window", "dtype", "causal",
               "method", "fwd_ms", "fwdbwd_ms", "peak_mem_bytes", "note")
DEFAULT_N = (4096, 16384, 65536, 131072)
DEFAULT_WINDOWS = ("256", "1024", "4096", "dense")
DEFAULT_D = (128, 64)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "figures" / "bench" / "h200.json"


# ---------------------------------------------------------------------------------- records


def make_record(env: dict, *, B: int, Hq: int, Hkv: int, D: int, N: int, window: int,
                method: str, fwd_ms: float | None, fwdbwd_ms: float | None,
                peak_mem_bytes: int | None, note: str, dtype: str = "torch.bfloat16",
                causal: bool = True) -> dict:
    """One result row, keys in the order of ``RECORD_KEYS``; times (ms) rounded to 0.1 µs."""
    rnd = (lambda t: None if t is None else round(float(t), 4))
    rec = {"gpu": env["gpu"], "torch": env["torch"], "triton": env["triton"], "B": B, "Hq": Hq,
           "Hkv": Hkv, "D": D, "N": N, "window": window, "dtype": dtype, "causal": causal,
           "method": method, "fwd_ms": rnd(fwd_ms), "fwdbwd_ms": rnd(fwdbwd_ms),
           "peak_mem_bytes": None if peak_mem_bytes is None else int(peak_mem_bytes),
           "note": note}
    validate_record(rec)
    return rec


def validate_record(rec: dict) -> None:
    """Raise ``ValueError`` unless ``rec`` has exactly the schema's keys with sane values."""
    if tuple(rec) != RECORD_KEYS and set(rec) != set(RECORD_KEYS):
        raise ValueError(f"record keys must be {RECORD_KEYS}; got {tuple(rec)}")
    if rec["method"] not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {rec['method']!r}")
    for key in ("B", "Hq", "Hkv", "D", "N", "window"):
        if not isinstance(rec[key], int) or isinstance(rec[key], bool):
            raise TypeError(f"{key} must be an int; got {rec[key]!r}")
        if rec[key] < 1:
            raise ValueError(f"{key} must be >= 1; got {rec[key]}")
    for key in ("fwd_ms", "fwdbwd_ms"):
        t = rec[key]
        if t is not None and (not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0):
            raise ValueError(f"{key} must be null or a positive finite number; got {t!r}")
    if rec["peak_mem_bytes"] is not None and (not isinstance(rec["peak_mem_bytes"], int)
                                              or rec["peak_mem_bytes"] < 0):
        raise ValueError(f"peak_mem_bytes must be null or a non-negative int; got {rec['peak_mem_bytes']!r}")
    if not isinstance(rec["note"], str) or not isinstance(rec["causal"], bool):
        raise TypeError("note must be a str and causal a bool")
    if rec["fwd_ms"] is None and not rec["note"]:
        raise ValueError("a record without a time must say why in its note")


def save_records(records: list[dict], path: Path) -> None:
    """Write the list as JSON atomically (a killed run leaves the last complete file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(tmp, path)


def fill_missing(records: list[dict], *, ns: Iterable[int], windows: list[int | None],
                 ds: Iterable[int], methods: Iterable[str], reason: str) -> list[dict]:
    """Append a null-time record, with ``reason``, for every grid point a run did not reach
    (e.g. when the device machine's time ran out): the grid stays complete and honest."""
    if not records:
        raise ValueError("fill_missing needs at least one record (for the environment fields)")
    env, first = records[0], records[0]
    have = {(r["D"], r["N"], r["window"], r["method"]) for r in records}
    out = list(records)
    for D in ds:
        for N in ns:
            for w in windows_for(N, windows):
                for m in methods:
                    if (D, N, w, m) not in have:
                        out.append(make_record(env, B=first["B"], Hq=first["Hq"], Hkv=first["Hkv"],
                                               D=D, N=N, window=w, method=m, fwd_ms=None,
                                               fwdbwd_ms=None, peak_mem_bytes=None, note=reason))
    return out


def parse_windows(items: Iterable[str]) -> list[int | None]:
    """``["256", "dense"] -> [256, None]``; None (also spelt "N") is the dense regime w = N."""
    out: list[int | None] = []
    for item in items:
        if str(item).lower() in ("dense", "n", "inf"):
            out.append(None)
        else:
            w = int(item)
            if w < 1:
                raise ValueError(f"--window values must be >= 1 or 'dense'; got {item!r}")
            out.append(w)
    return out


def windows_for(N: int, windows: list[int | None]) -> list[int]:
    """The distinct effective windows at length N (w >= N collapses to the dense regime w = N)."""
    out: list[int] = []
    for w in windows:
        eff = N if w is None else min(w, N)
        if eff not in out:
            out.append(eff)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dma_ref.bench", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=list(DEFAULT_N), help="sequence lengths")
    p.add_argument("--window", nargs="+", default=list(DEFAULT_WINDOWS),
                   help="windows w; 'dense' means w = N (the dense regime)")
    p.add_argument("--d", type=int, nargs="+", default=list(DEFAULT_D), help="head dims")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--b", type=int, default=1)
    p.add_argument("--hq", type=int, default=8)
    p.add_argument("--hkv", type=int, default=2)
    p.add_argument("--fwd-only", action="store_true", help="skip forward + backward")
    p.add_argument("--time-cap", type=float, default=1500.0,
                   help="ms: skip a measurement predicted (from the same method at the previous "
                        "N, scaled by N^2) to take longer than this per call")
    p.add_argument("--rep-ms", type=float, default=150.0, help="timed budget per measurement")
    p.add_argument("--budget-s", type=float, default=float("inf"),
                   help="wall-clock budget: configs not reached in time are recorded as not run")
    p.add_argument("--once-from", type=int, default=65536,
                   help=f"from this N on, measure {W_INDEPENDENT} at one window only (its cost "
                        "does not depend on w) and record that result for every window")
    p.add_argument("--no-check", action="store_true", help="skip the correctness checks")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    p.add_argument("--resume", type=Path, default=None,
                   help="records of an earlier, interrupted run: kept, and their grid points skipped")
    args = p.parse_args(argv)
    args.windows = parse_windows(args.window)
    if args.hq % args.hkv:
        p.error(f"--hq ({args.hq}) must be a multiple of --hkv ({args.hkv})")
    return args


# ------------------------------------------------------------------------ masks on the GPU


def lifetimes_torch(s: torch.Tensor, window: int, chunk: int = 512) -> torch.Tensor:
    """int64 ``[B, Hkv, K]`` key lifetimes ``e`` (DESIGN.md 3.5) with vectorised torch ops.

    The benchmark's own builder for the baselines (FlexAttention's mask_mod, the official
    kernel's dense mask), used when the kernels' builder is missing and to cross-check it.
    Same definition as ``dma_ref.key_lifetimes`` (ties included): ``theta_p``, the w-th best
    rank among keys ``<= p``, is carried chunk by chunk (the w best ranks so far plus the
    chunk's ranks are the only candidates), then ``e_j = max(j, first p with theta_p < r_j)``.
    Memory O(K + chunk·(w + chunk)); no K x K tensor.
    """
    from .mask import key_ranks

    B, H, K = s.shape
    dev = s.device
    if window >= K:                                   # nothing is ever evicted
        return torch.full((B, H, K), K, dtype=torch.int64, device=dev)
    w = window
    r = key_ranks(s).reshape(B * H, K).to(torch.float32)        # exact: ranks < 2^24
    big = float(K)                                              # "no key yet" rank
    top = torch.full((B * H, w), big, device=dev)               # w best ranks of the prefix
    theta = torch.empty(B * H, K, device=dev)
    for c0 in range(0, K, chunk):
        c1 = min(c0 + chunk, K)
        rc = r[:, c0:c1]                                        # [BH, C]
        C = c1 - c0
        seen = torch.arange(C, device=dev)[None, :] <= torch.arange(C, device=dev)[:, None]
        prefix = torch.where(seen[None], rc[:, None, :], big)   # [BH, C, C]: chunk keys <= p
        cand = torch.cat([top[:, None, :].expand(-1, C, -1), prefix], dim=-1)
        theta[:, c0:c1] = torch.kthvalue(cand, w, dim=-1).values
        top = torch.topk(torch.cat([top, rc], dim=-1), w, dim=-1, largest=False).values
    first_evict = torch.searchsorted(-theta.contiguous(), -r.contiguous(), side="right")
    e = torch.maximum(torch.arange(K, device=dev)[None, :], first_evict)
    return e.reshape(B, H, K).to(torch.int64)


def keep_rows(e: torch.Tensor, p0: int, p1: int) -> torch.Tensor:
    """bool ``[B, Hkv, p1 - p0, K]``: the causal row-mode mask for query rows ``p0..p1-1``."""
    K = e.shape[-1]
    p = torch.arange(p0, p1, device=e.device)[:, None]
    j = torch.arange(K, device=e.device)[None, :]
    return (j <= p) & (p < e[:, :, None, :])


def dense_mask_from_lifetimes(e: torch.Tensor, rows: int = 4096) -> torch.Tensor:
    """bool ``[B, Hkv, K, K]`` from lifetimes, built in row chunks (for the official kernel)."""
    B, H, K = e.shape
    out = torch.empty(B, H, K, K, dtype=torch.bool, device=e.device)
    for p0 in range(0, K, rows):
        out[:, :, p0:p0 + rows] = keep_rows(e, p0, min(p0 + rows, K))
    return out


def dense_bias_from_lifetimes(e: torch.Tensor, s: torch.Tensor, rows: int = 4096) -> torch.Tensor:
    """``[B, Hkv, K, K]`` in s's dtype: ``s_j`` on kept pairs, ``-inf`` elsewhere."""
    B, H, K = e.shape
    out = torch.empty(B, H, K, K, dtype=s.dtype, device=e.device)
    neg = torch.tensor(float("-inf"), dtype=s.dtype, device=e.device)
    for p0 in range(0, K, rows):
        out[:, :, p0:p0 + rows] = torch.where(keep_rows(e, p0, min(p0 + rows, K)),
                                              s[:, :, None, :], neg)
    return out


# ---------------------------------------------------------------------------------- timing


@dataclass
class Timer:
    """Median of CUDA-event timings, L2 flushed before each repetition (like do_bench)."""

    rep_ms: float = 150.0
    min_reps: int = 3
    max_reps: int = 100
    flush: torch.Tensor | None = None

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.flush is None:
            self.flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
        fn()                                          # warm-up: compilation, autotuning
        torch.cuda.synchronize()
        est = self._once(fn)
        n = int(min(self.max_reps, max(self.min_reps, self.rep_ms / max(est, 1e-3))))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for a, b in zip(starts, ends):
            self.flush.zero_()
            a.record()
            fn()
            b.record()
        torch.cuda.synchronize()
        return statistics.median(a.elapsed_time(b) for a, b in zip(starts, ends))

    def _once(self, fn: Callable[[], object]) -> float:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.flush.zero_()
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float32."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# --------------------------------------------------------------------------------- methods


@dataclass
class Case:
    """The shared inputs of one (D, N): q ``[B,Hq,N,D]``, k, v ``[B,Hkv,N,D]``, s ``[B,Hkv,N]``
    (bf16 leaves requiring grad), dO like q, and caches of lifetimes per window."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    s: torch.Tensor
    do: torch.Tensor
    lifetimes: dict = field(default_factory=dict)
    e_note: dict = field(default_factory=dict)
    ref: dict = field(default_factory=dict)           # window -> fp32 naive output (small N)

    @property
    def G(self) -> int:
        return self.q.shape[1] // self.k.shape[1]


def make_case(B: int, Hq: int, Hkv: int, N: int, D: int, seed: int = 0) -> Case:
    """Random bf16 inputs; scores from values as in paper Eq. 3 (``dma_scores``), bf16.

    delta ~ N(0, 1/(Hkv·D)) makes ``x`` about standard normal and A = 1 gives
    ``s = exp(softplus(x))`` in about [1.3, 20]: bf16 rounds it to a few hundred distinct values,
    so ties are common, as in a real bf16 model.
    """
    from .scores import dma_scores

    g = torch.Generator(device="cuda").manual_seed(seed)
    dt = torch.bfloat16
    q = torch.randn(B, Hq, N, D, generator=g, device="cuda", dtype=dt)
    k = torch.randn(B, Hkv, N, D, generator=g, device="cuda", dtype=dt)
    v = torch.randn(B, Hkv, N, D, generator=g, device="cuda", dtype=dt)
    delta = torch.randn(Hkv * D, Hkv, generator=g, device="cuda") * (Hkv * D) ** -0.5
    with torch.no_grad():
        s = dma_scores(v.float(), delta, torch.ones(Hkv, device="cuda")).to(dt)
    do = torch.randn(B, Hq, N, D, generator=g, device="cuda", dtype=dt)
    for t in (q, k, v, s):
        t.requires_grad_(True)
    return Case(q, k, v, s, do)


def get_lifetimes(case: Case, w: int) -> torch.Tensor:
    """Lifetimes for window w from the kernels' builder; the first time, it is compared exactly
    with the benchmark's torch version and the time to build them is noted."""
    from .kernels import build_lifetimes

    if w in case.lifetimes:
        return case.lifetimes[w]
    s = case.s.detach()
    t0 = time.perf_counter()
    e_torch = lifetimes_torch(s, w)
    torch.cuda.synchronize()
    t_torch = (time.perf_counter() - t0) * 1e3
    note = f"lifetimes: bench torch builder {t_torch:.1f} ms"
    e = build_lifetimes(s, w)
    note += f", kernels builder agrees={bool(torch.equal(e, e_torch))}"
    case.lifetimes[w] = e
    case.e_note[w] = note
    return e


@dataclass
class Prepared:
    """A method ready to run: ``fwd() -> o`` and ``fwdbwd()``, plus notes from its setup."""

    fwd: Callable[[], torch.Tensor]
    fwdbwd: Callable[[], object]
    notes: list[str] = field(default_factory=list)
    to_bhnd: Callable[[torch.Tensor], torch.Tensor] = (lambda o: o)   # output -> [B, Hq, N, D]
    # More timings for the note, run after the peak memory is read (CUDA graphs keep a pool).
    extra: Callable[[], list[str]] | None = None


def _host_ms(fn: Callable[[], object]) -> float:
    """Wall time of one call (host clock after a synchronize), for one-off builds."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def prepare_dma_triton(case: Case, w: int, timer: Timer) -> Prepared:
    try:
        from dma_ref.kernels import dma_attention
    except ImportError as err:
        raise _Unavailable(f"not available: dma_ref.kernels.dma_attention ({err})") from err

    q, k, v, s, do = case.q, case.k, case.v, case.s, case.do
    sd = s.detach()
    notes = []
    tile = None
    try:
        # The whole mask construction one call does (lifetimes + per-block key lists), with the
        # forward's query-block size (the call's own tile choice), and the lifetime scan alone.
        from dma_ref.kernels import FWD_CONFIG, build_lifetimes, build_plan
        from dma_ref.kernels.autograd import _fit, _shape
        cfg = _fit(FWD_CONFIG, q.shape[-1], 2, False)
        tile = (cfg, *_shape(cfg, case.G, q.shape[2]))                 # (cfg, GH, BLOCK_Q)
        notes.append(f"build_ms={timer(lambda: build_plan(sd, w, q.shape[2], block_q=tile[2])):.4f}")
        notes.append(f"lifetimes_ms={timer(lambda: build_lifetimes(sd, w)):.4f}")
    except (ImportError, AttributeError) as err:
        notes.append(f"builder not timed ({err})")

    def fwd():
        return dma_attention(q, k, v, s, w)

    def fwdbwd():
        return torch.autograd.grad(dma_attention(q, k, v, s, w), (q, k, v, s), do)

    def extra() -> list[str]:
        if tile is None:
            return []
        try:
            return _dma_split(case, w, timer, fwd, fwdbwd, *tile)
        except Exception as err:  # noqa: BLE001 - the split is extra information, never fatal
            return [f"split not timed ({type(err).__name__}: {str(err)[:120]})"]
    return Prepared(fwd, fwdbwd, notes, extra=extra)


def _dma_split(case: Case, w: int, timer: Timer, fwd, fwdbwd, cfg, GH: int, bq: int) -> list[str]:
    """Where DMA's time goes: the forward kernel alone on a prebuilt plan (``fwd_kernel_ms``),
    the whole forward and forward + backward replayed from a CUDA graph (``graph_fwd_ms``,
    ``graph_fwdbwd_ms``: the same GPU work without Python and launch overhead), and the tiles
    the autotuner chose (``tuned_fwd`` / ``tuned_bwd``: BLOCK_N, query heads per program,
    warps, stages). ``cfg, GH, bq``: the forward's tile, as ``prepare_dma_triton`` found it."""
    from dma_ref.kernels import build_plan
    from dma_ref.kernels.autograd import _TUNED, dma_forward

    q, k, v, s = case.q, case.k, case.v, case.s
    D, N = q.shape[-1], q.shape[2]
    sd = s.detach()
    plan = build_plan(sd, w, N, block_q=bq)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    # s in its own dtype, as dma_attention passes it (the autotuner keys on the dtypes: run 4
    # timed the kernel with fp32 scores, another key than the call's bf16 ones).
    kernel_ms = timer(lambda: dma_forward(qd, kd, vd, sd, plan, D**-0.5, cfg, GH, True))
    notes = [f"fwd_kernel_ms={kernel_ms:.4f}"]
    for name, fn in (("graph_fwd_ms", fwd), ("graph_fwdbwd_ms", fwdbwd)):
        notes.append(f"{name}={timer(graphed(fn)):.4f}")
    for name in ("fwd", "bwd"):
        best = getattr(_TUNED.get(name), "best_config", None)
        if best is not None:
            notes.append(f"tuned_{name}=BN{best.kwargs['BLOCK_N']}/GH{best.kwargs['GH']}/"
                         f"w{best.num_warps}/s{best.num_stages}")
    return notes


def graphed(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` captured once in a CUDA graph (after two warm-up calls on a side stream, which
    compile and autotune); returns the replay. Used by the benchmark and scripts/profile_*.py."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _repeat_kv(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    k = case.k.detach().repeat_interleave(case.G, dim=1).requires_grad_(True)
    v = case.v.detach().repeat_interleave(case.G, dim=1).requires_grad_(True)
    return k, v


def _prepare_sdpa_dense(case: Case, backend) -> Prepared:
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    q, do = case.q, case.do
    k, v = _repeat_kv(case)

    def fwd():
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def fwdbwd():
        with sdpa_kernel([backend]):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return torch.autograd.grad(o, (q, k, v), do)
    return Prepared(fwd, fwdbwd, ["k, v repeated to Hq heads outside the timed region"])


def prepare_sdpa_cudnn(case: Case, w: int, timer: Timer) -> Prepared:
    from torch.nn.attention import SDPBackend
    return _prepare_sdpa_dense(case, SDPBackend.CUDNN_ATTENTION)


def prepare_sdpa_flash(case: Case, w: int, timer: Timer) -> Prepared:
    from torch.nn.attention import SDPBackend
    return _prepare_sdpa_dense(case, SDPBackend.FLASH_ATTENTION)


def prepare_sdpa_efficient_bias(case: Case, w: int, timer: Timer) -> Prepared:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, Hq, N, D = case.q.shape
    Hkv, G = case.k.shape[1], case.G
    e = get_lifetimes(case, w)
    s = case.s.detach()
    box = {}
    build = _host_ms(lambda: box.setdefault("bias", dense_bias_from_lifetimes(e, s)))
    # One [N, N] bias per KV head, broadcast (stride 0) over the G query heads of its group:
    # the batch axis becomes (B, Hkv) and the head axis the group.
    bias = box["bias"].reshape(B * Hkv, 1, N, N).expand(B * Hkv, G, N, N)
    k_rep, v_rep = _repeat_kv(case)
    q, do = case.q, case.do
    qg = q.view(B * Hkv, G, N, D)
    kg, vg = k_rep.view(B * Hkv, G, N, D), v_rep.view(B * Hkv, G, N, D)

    def fwd():
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            return F.scaled_dot_product_attention(qg, kg, vg, attn_mask=bias).reshape(B, Hq, N, D)

    def fwdbwd():
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=bias)
            return torch.autograd.grad(o, (q, k_rep, v_rep), do.view(B * Hkv, G, N, D))
    return Prepared(fwd, fwdbwd, [f"bias build {build:.1f} ms (not timed)",
                                  "no gradient for s (bias is a constant)"])


_FLEX: dict = {}


def prepare_flex_blockmask(case: Case, w: int, timer: Timer) -> Prepared:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, Hq, N, D = case.q.shape
    G = case.G
    if "compiled" not in _FLEX:
        # One compiled callable; every (D, N) compiles once (static shapes). The score_mod and
        # mask_mod closures are created once per (D, N) and read buffers that are refilled per
        # window, so a new window does not trigger a recompilation.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        _FLEX["compiled"] = torch.compile(flex_attention, dynamic=False)
    key = (id(case), N, D)
    if _FLEX.get("key") != key:
        e_buf = torch.empty(case.k.shape[0], case.k.shape[1], N, dtype=torch.int32, device="cuda")
        s = case.s

        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (q_idx < e_buf[b, h // G, kv_idx])

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + s[b, h // G, kv_idx]
        _FLEX.update(key=key, e_buf=e_buf, mask_mod=mask_mod, score_mod=score_mod)
    e_buf, mask_mod, score_mod = _FLEX["e_buf"], _FLEX["mask_mod"], _FLEX["score_mod"]
    e_buf.copy_(get_lifetimes(case, w))
    box = {}

    def build():
        with warnings.catch_warnings():             # _compile=True is deprecated, still works
            warnings.simplefilter("ignore", DeprecationWarning)
            box["bm"] = create_block_mask(mask_mod, B, Hq, N, N, device="cuda", _compile=True)
    build()                                           # first call compiles
    build_ms = _host_ms(build)
    bm = box["bm"]
    flex = _FLEX["compiled"]
    q, k, v, s, do = case.q, case.k, case.v, case.s, case.do
    notes = [f"block-mask build {build_ms:.1f} ms (not timed)", case.e_note.get(w, ""),
             f"block density {_block_density(bm):.3f}"]

    def fwd():
        return flex(q, k, v, score_mod=score_mod, block_mask=bm, enable_gqa=True)

    def fwdbwd():
        return torch.autograd.grad(fwd(), (q, k, v, s), do)
    return Prepared(fwd, fwdbwd, notes)


def _block_density(bm) -> float:
    """Fraction of causal 128x128 tiles the block mask visits."""
    try:
        n_q = bm.kv_num_blocks.shape[-1]
        visited = bm.kv_num_blocks.sum() + (bm.full_kv_num_blocks.sum()
                                            if bm.full_kv_num_blocks is not None else 0)
        causal = bm.kv_num_blocks.shape[0] * bm.kv_num_blocks.shape[1] * n_q * (n_q + 1) / 2
        return float(visited) / causal
    except Exception:  # noqa: BLE001 - BlockMask internals differ between torch versions
        return float("nan")


def official_available() -> tuple[bool, str]:
    """Whether flash-sparse-attn's Triton kernel is importable, and its version or the reason."""
    try:
        import flash_sparse_attn
        from flash_sparse_attn.flash_sparse_attn_triton import triton_sparse_attn_func  # noqa: F401
        return True, f"flash-sparse-attn {flash_sparse_attn.__version__}"
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return False, f"not available: flash-sparse-attn not importable ({type(err).__name__}: {err})"


def prepare_official_triton(case: Case, w: int, timer: Timer) -> Prepared:
    ok, version = official_available()
    if not ok:
        raise _Unavailable(version)
    from flash_sparse_attn.flash_sparse_attn_triton import triton_sparse_attn_func

    e = get_lifetimes(case, w)
    box = {}
    build = _host_ms(lambda: box.setdefault("mask", dense_mask_from_lifetimes(e)))
    mask = box["mask"]                                # bool [B, Hkv, N, N]
    q, k, v, s, do = case.q, case.k, case.v, case.s, case.do
    # The official kernel takes [B, N, H, D]; transposed views avoid copies (it reads strides).
    # The bias is the score per key, broadcast over query rows: [B, Hkv, 1, N].
    qt, kt, vt, dot = (t.transpose(1, 2) for t in (q, k, v, do))

    def fwd():
        return triton_sparse_attn_func(qt, kt, vt, attn_mask=mask, attn_bias=s[:, :, None, :],
                                       is_causal=True)

    def fwdbwd():
        return torch.autograd.grad(fwd(), (q, k, v, s), dot)
    return Prepared(fwd, fwdbwd, [version, f"dense bool mask build {build:.1f} ms (not timed)"],
                    to_bhnd=lambda o: o.transpose(1, 2))


class _Unavailable(Exception):
    """The method cannot run in this environment (recorded, not fatal)."""


PREPARE = {"dma_triton": prepare_dma_triton, "sdpa_cudnn": prepare_sdpa_cudnn,
           "sdpa_flash": prepare_sdpa_flash, "sdpa_efficient_bias": prepare_sdpa_efficient_bias,
           "flex_blockmask": prepare_flex_blockmask, "official_triton": prepare_official_triton}


# ------------------------------------------------------------------------------ correctness


def naive_reference(case: Case, w: int) -> tuple[torch.Tensor, tuple]:
    """fp32 naive DMA output and gradients (q, k, v, s) on the GPU, for small N."""
    from .naive import naive_dma_attention

    leaves = [t.detach().float().requires_grad_(True) for t in (case.q, case.k, case.v, case.s)]
    o = naive_dma_attention(*leaves, w)
    grads = torch.autograd.grad(o, leaves, case.do.float())
    return o.detach(), grads


def dma_checks(case: Case, w: int, prepared: Prepared, ref_n_max: int) -> list[str]:
    """Relative errors of dma_triton: vs fp32 naive (N <= ref_n_max), vs cuDNN when w >= N."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from dma_ref.kernels import dma_attention

    notes = []
    N = case.q.shape[2]
    if N <= ref_n_max:
        o_ref, g_ref = naive_reference(case, w)
        case.ref[w] = o_ref
        o = prepared.fwd()
        grads = prepared.fwdbwd()
        errs = [rel_err(o, o_ref)] + [rel_err(a, b) for a, b in zip(grads, g_ref)]
        notes.append("rel err vs fp32 naive o/dq/dk/dv/ds = " + "/".join(f"{x:.1e}" for x in errs))
    if w >= N:
        # Constant scores change no softmax: DMA with w >= N must equal plain causal attention.
        with torch.no_grad():
            s_const = torch.full_like(case.s, 0.5)
            o = dma_attention(case.q, case.k, case.v, s_const, w)
            k_rep, v_rep = (t.repeat_interleave(case.G, dim=1) for t in (case.k, case.v))
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                o_sdpa = F.scaled_dot_product_attention(case.q, k_rep, v_rep, is_causal=True)
        notes.append(f"rel err vs sdpa_cudnn (constant s, w >= N) = {rel_err(o, o_sdpa):.1e}")
    return notes


# ------------------------------------------------------------------------------------ driver


def environment() -> dict:
    import triton
    return {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__}


def predicted_ms(history: dict, method: str, D: int, w_key: object, N: int, phase: str) -> float | None:
    """The last measured time of this method at a smaller N, scaled by (N / N_prev)^2."""
    best = None
    for (m, d, wk, n, ph), t in history.items():
        usable = (m, d, wk, ph) == (method, D, w_key, phase) and n < N and t is not None
        if usable and (best is None or n > best[0]):
            best = (n, t)
    return None if best is None else best[1] * (N / best[0]) ** 2


def run(args: argparse.Namespace, log=print) -> list[dict]:
    """Run the grid; write the JSON after every record; return the records."""
    env = environment()
    timer = Timer(rep_ms=args.rep_ms)
    # Allocate the 256 MiB L2-flush buffer now, so that no method's peak memory counts it
    # (runs 2 and 3 allocated it lazily: their first measurement's peak includes it).
    timer.flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    B, Hq, Hkv = args.b, args.hq, args.hkv
    records: list[dict] = []
    history: dict = {}
    done: set = set()
    if args.resume is not None and args.resume.exists():
        records = json.loads(args.resume.read_text())
        for r in records:
            done.add((r["D"], r["N"], r["window"], r["method"]))
            w_key = "dense" if r["window"] >= r["N"] else r["window"]
            for phase, key in (("fwd", "fwd_ms"), ("fwdbwd", "fwdbwd_ms")):
                if r[key] is not None:
                    history[(r["method"], r["D"], w_key, r["N"], phase)] = r[key]
        log(f"resuming after {len(records)} records of {args.resume}")
    t_start = time.perf_counter()
    _, why = official_available()
    log(f"{env}; official_triton: {why}")

    def emit(D, N, w, method, fwd, fb, peak, notes):
        note = "; ".join(n for n in notes if n)
        records.append(make_record(env, B=B, Hq=Hq, Hkv=Hkv, D=D, N=N, window=w, method=method,
                                   fwd_ms=fwd, fwdbwd_ms=fb, peak_mem_bytes=peak, note=note))
        save_records(records, args.out)
        f = "-" if fwd is None else f"{fwd:9.3f}"
        g = "-" if fb is None else f"{fb:9.3f}"
        log(f"D={D:3d} N={N:6d} w={w:6d} {method:20s} fwd {f:>9s} fwd+bwd {g:>9s} "
            f"[{time.perf_counter() - t_start:6.0f}s] {note[:150]}")

    for D in args.d:
        for N in args.n:
            if N % 128:
                raise SystemExit(f"N must be a multiple of 128, got {N}")
            case = None
            # Results that do not depend on w, measured once per (D, N); seeded from --resume.
            dense_cache: dict = {
                r["method"]: (r["fwd_ms"], r["fwdbwd_ms"], r["peak_mem_bytes"],
                              [n for n in r["note"].split("; ") if not n.startswith("independent")],
                              r["window"])
                for r in records
                if (r["D"], r["N"]) == (D, N) and r["fwd_ms"] is not None
                and (r["method"] in DENSE_METHODS
                     or (r["method"] in W_INDEPENDENT and N >= args.once_from))}
            for w in windows_for(N, args.windows):
                w_key = "dense" if w >= N else w
                for method in args.methods:
                    if (D, N, w, method) in done:
                        continue
                    if method in OFFICIAL_CRASH and N * N >= 2**31:
                        emit(D, N, w, method, None, None, None, [OFFICIAL_CRASH[method]])
                        continue
                    over = time.perf_counter() - t_start > args.budget_s
                    if over:
                        emit(D, N, w, method, None, None, None,
                             ["not run: the run's wall-clock budget was used up"])
                        continue
                    if method in dense_cache:
                        fwd, fb, peak, notes, w0 = dense_cache[method]
                        emit(D, N, w, method, fwd, fb, peak,
                             [n for n in notes if n != "dense regime (w >= N)"]
                             + [f"independent of w: measured once per (D, N), at w={w0}"])
                        continue
                    if case is None:
                        torch.cuda.empty_cache()
                        case = make_case(B, Hq, Hkv, N, D)
                    result = measure(case, method, w, w_key, D, N, args, timer, history)
                    if method in DENSE_METHODS or (method in W_INDEPENDENT and N >= args.once_from):
                        dense_cache[method] = (*result, w)
                    emit(D, N, w, method, *result)
            del case
            _FLEX.pop("key", None)
            torch.cuda.empty_cache()
    log(f"done in {time.perf_counter() - t_start:.0f} s, {len(records)} records -> {args.out}")
    return records


def measure(case: Case, method: str, w: int, w_key, D: int, N: int, args, timer: Timer,
            history: dict) -> tuple:
    """``(fwd_ms, fwdbwd_ms, peak_mem_bytes, notes)`` for one method and window."""
    notes: list[str] = []
    if w >= N:
        notes.append("dense regime (w >= N)")
    pred_f = predicted_ms(history, method, D, w_key, N, "fwd")
    pred_b = predicted_ms(history, method, D, w_key, N, "fwdbwd")
    if pred_f is not None and pred_f > args.time_cap:
        return None, None, None, notes + [f"time cap: predicted fwd {pred_f:.0f} ms > {args.time_cap:.0f} ms"]
    fwd_ms = fb_ms = peak = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    prepared = None
    try:
        prepared = PREPARE[method](case, w, timer)
        notes += prepared.notes
        fwd_ms = timer(prepared.fwd)
        history[(method, D, w_key, N, "fwd")] = fwd_ms
        if not args.fwd_only:
            if fwd_ms * 3.5 > args.time_cap or (pred_b is not None and pred_b > args.time_cap):
                notes.append(f"time cap: fwd+bwd predicted over {args.time_cap:.0f} ms")
            else:
                fb_ms = timer(prepared.fwdbwd)
                history[(method, D, w_key, N, "fwdbwd")] = fb_ms
        peak = torch.cuda.max_memory_allocated() - base
        if prepared.extra is not None:
            notes += prepared.extra()
        if method == "dma_triton" and not args.no_check:
            notes += dma_checks(case, w, prepared, ref_n_max=4096)
        elif method in ("flex_blockmask", "official_triton") and not args.no_check and w in case.ref:
            notes.append(f"rel err vs fp32 naive o = {rel_err(prepared.to_bhnd(prepared.fwd()), case.ref[w]):.1e}")
    except _Unavailable as err:
        notes.append(str(err))
    except torch.OutOfMemoryError:
        notes.append("OOM")
    except Exception as err:  # noqa: BLE001 - a failing method is a result, not a crash
        msg = str(err).strip().splitlines()
        notes.append(f"error: {type(err).__name__}: {msg[0][:200] if msg else ''}")
    finally:
        del prepared
        torch.cuda.empty_cache()
    if fwd_ms is None and not notes:
        notes.append("not measured")
    return fwd_ms, fb_ms, peak, notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("error: python -m dma_ref.bench needs a CUDA GPU, and torch sees none "
              f"(torch {torch.__version__}). The recorded H200 results are in "
              "figures/bench/h200.json; plot them with python -m dma_ref.viz.perf.",
              file=sys.stderr)
        return 2
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
