"""The benchmark's records: the schema of one row, the JSON file, and the grid of (N, w)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

from ...paths import FIGURES

METHODS = ("dma_triton", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient_bias", "flex_blockmask",
           "official_triton")
DENSE_METHODS = ("sdpa_cudnn", "sdpa_flash")           # no mask, no bias: independent of w
# Visits every tile whatever the mask (the mask lives in a dense bias): its cost does not depend
# on w, so from --once-from on it is measured at one window and recorded for the others.
W_INDEPENDENT = ("sdpa_efficient_bias",)
# The official kernel is not launched when N^2 >= 2^31: it crashed there (figures/bench/
# PERF_NOTES.md), and a crash poisons the CUDA context and ends the whole run.
OFFICIAL_CRASH = {"official_triton": "error: CUDA illegal memory access at N=65536 (run 2); not "
                                     "launched when N^2 >= 2^31 (its [B,H,N,N] mask offsets "
                                     "likely overflow int32)"}
RECORD_KEYS = ("gpu", "torch", "triton", "B", "Hq", "Hkv", "D", "N", "window", "dtype", "causal",
               "method", "fwd_ms", "fwdbwd_ms", "peak_mem_bytes", "note")
DEFAULT_N = (4096, 16384, 65536, 131072)
DEFAULT_WINDOWS = ("256", "1024", "4096", "dense")
DEFAULT_D = (128, 64)
DEFAULT_OUT = FIGURES / "bench" / "h200.json"


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
        raise ValueError("peak_mem_bytes must be null or a non-negative int; "
                         f"got {rec['peak_mem_bytes']!r}")
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
