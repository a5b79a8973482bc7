"""The benchmark's driver: every (D, N, w, method) of the grid, one record each, written as it
goes."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import triton

from ...numerics import rel_err
from .baselines import (
    FLEX,
    Unavailable,
    official_available,
    prepare_flex_blockmask,
    prepare_official_triton,
    prepare_sdpa_cudnn,
    prepare_sdpa_efficient_bias,
    prepare_sdpa_flash,
)
from .dma import dma_checks, prepare_dma_triton
from .inputs import Case, make_case
from .records import (
    DEFAULT_D,
    DEFAULT_N,
    DEFAULT_OUT,
    DEFAULT_WINDOWS,
    DENSE_METHODS,
    METHODS,
    OFFICIAL_CRASH,
    W_INDEPENDENT,
    make_record,
    parse_windows,
    save_records,
    windows_for,
)
from .timing import Timer

DENSE_REGIME = "dense regime (w >= N)"
PREPARE = {"dma_triton": prepare_dma_triton, "sdpa_cudnn": prepare_sdpa_cudnn,
           "sdpa_flash": prepare_sdpa_flash, "sdpa_efficient_bias": prepare_sdpa_efficient_bias,
           "flex_blockmask": prepare_flex_blockmask, "official_triton": prepare_official_triton}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dma_ref.lab.bench",
                                description="DMA's Triton kernel against every anchor, on the "
                                            "same inputs.")
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
                   help="records of an earlier, interrupted run: kept, and their grid points "
                        "skipped")
    args = p.parse_args(argv)
    args.windows = parse_windows(args.window)
    if args.hq % args.hkv:
        p.error(f"--hq ({args.hq}) must be a multiple of --hkv ({args.hkv})")
    return args


@dataclass
class Measured:
    """One method measured at one window: times (ms), peak memory, and the notes of its setup and
    checks (not the regime note, which belongs to each record's own window)."""

    fwd_ms: float | None
    fwdbwd_ms: float | None
    peak_mem_bytes: int | None
    notes: list[str]
    window: int


def measured_once(method: str, N: int, once_from: int) -> bool:
    """Whether the method's result does not depend on w, so one measurement per (D, N) serves
    every window (the dense methods always, the bias method from ``--once-from`` on)."""
    return method in DENSE_METHODS or (method in W_INDEPENDENT and N >= once_from)


def resumed_once(records: list[dict], D: int, N: int, once_from: int) -> dict[str, Measured]:
    """The w-independent results at (D, N) among an earlier run's records: per method the first
    timed record, the measured one (its copies for the other windows come after it). Its note is
    kept whole, less the regime note ``run`` writes first on a record at w >= N."""
    out: dict[str, Measured] = {}
    for r in records:
        if ((r["D"], r["N"]) != (D, N) or r["fwd_ms"] is None
                or not measured_once(r["method"], N, once_from) or r["method"] in out):
            continue
        note = r["note"]
        if r["window"] >= N:
            note = note.removeprefix(DENSE_REGIME).removeprefix("; ")
        out[r["method"]] = Measured(r["fwd_ms"], r["fwdbwd_ms"], r["peak_mem_bytes"], [note],
                                    r["window"])
    return out


def environment() -> dict:
    return {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__}


def predicted_ms(history: dict, method: str, D: int, w_key: object, N: int,
                 phase: str) -> float | None:
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
    # Allocated before any method, so that no method's peak memory counts the flush buffer.
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
        note = "; ".join(n for n in notes if n) or ("not measured" if fwd is None else "")
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
            once = resumed_once(records, D, N, args.once_from)    # method -> its one result
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
                    if method in once:
                        m = once[method]
                        copied = f"independent of w: measured once per (D, N), at w={m.window}"
                        emit(D, N, w, method, m.fwd_ms, m.fwdbwd_ms, m.peak_mem_bytes,
                             m.notes + [copied])
                        continue
                    if case is None:
                        torch.cuda.empty_cache()
                        case = make_case(B, Hq, Hkv, N, D)
                    m = measure(case, method, w, w_key, D, N, args, timer, history)
                    if measured_once(method, N, args.once_from):
                        once[method] = m
                    emit(D, N, w, method, m.fwd_ms, m.fwdbwd_ms, m.peak_mem_bytes,
                         ([DENSE_REGIME] if w >= N else []) + m.notes)
            del case
            FLEX.pop("key", None)
            torch.cuda.empty_cache()
    log(f"done in {time.perf_counter() - t_start:.0f} s, {len(records)} records -> {args.out}")
    return records


def measure(case: Case, method: str, w: int, w_key, D: int, N: int, args: argparse.Namespace,
            timer: Timer, history: dict) -> Measured:
    """One method at one window; its times go into ``history`` (for later predictions)."""
    notes: list[str] = []
    pred_f = predicted_ms(history, method, D, w_key, N, "fwd")
    pred_b = predicted_ms(history, method, D, w_key, N, "fwdbwd")
    if pred_f is not None and pred_f > args.time_cap:
        return Measured(None, None, None,
                        [f"time cap: predicted fwd {pred_f:.0f} ms > {args.time_cap:.0f} ms"], w)
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
        elif (method in ("flex_blockmask", "official_triton") and not args.no_check
              and w in case.ref):
            o_err = rel_err(prepared.to_bhnd(prepared.fwd()), case.ref[w])
            notes.append(f"rel err vs fp32 naive o = {o_err:.1e}")
    except Unavailable as err:
        notes.append(str(err))
    except torch.OutOfMemoryError:
        notes.append("OOM")
    except Exception as err:  # noqa: BLE001 - a failing method is a result, not a crash
        msg = str(err).strip().splitlines()
        notes.append(f"error: {type(err).__name__}: {msg[0][:200] if msg else ''}")
    finally:
        del prepared
        torch.cuda.empty_cache()
    return Measured(fwd_ms, fb_ms, peak, notes, w)
