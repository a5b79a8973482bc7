"""Plots and tables of the benchmark records (``figures/bench/h200.json``).

    python -m dma_ref.viz.perf                 # regenerate figures/bench/*.png from the JSON

A record is one dict with the keys of ``dma_ref.lab.bench.records.RECORD_KEYS``; a null time
means the method was not measured (its note says why: OOM, time cap, not available). Pure functions
select and compute; the ``plot_*`` functions return a matplotlib figure and draw nothing else.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt

from .. import flops
from ..paths import FIGURES, save_figure

DEFAULT_JSON = FIGURES / "bench" / "h200.json"
PHASES = ("fwd_ms", "fwdbwd_ms")
PHASE_LABEL = {"fwd_ms": "forward", "fwdbwd_ms": "forward + backward"}
STYLE = {  # method -> (colour, marker); DMA's kernel stands out
    "dma_triton": ("#d62728", "o"),
    "sdpa_cudnn": ("#1f77b4", "s"),
    "sdpa_flash": ("#17becf", "^"),
    "sdpa_efficient_bias": ("#9467bd", "v"),
    "flex_blockmask": ("#2ca02c", "D"),
    "official_triton": ("#ff7f0e", "P"),
}
# DESIGN.md section 6 (D = 128, w = 1024): N -> (forward, forward+backward) speed-up over cuDNN.
TARGETS = {16384: (5.0, 3.5), 131072: (35.0, 30.0)}


def load_records(path: Path | str = DEFAULT_JSON) -> list[dict]:
    """The list of records stored at ``path``."""
    return json.loads(Path(path).read_text())


def select(records: list[dict], **where) -> list[dict]:
    """Records whose fields equal every ``where`` item, e.g. ``select(r, D=128, window=1024)``."""
    return [r for r in records if all(r.get(k) == v for k, v in where.items())]


def note_value(record: dict, key: str) -> float | None:
    """The number ``key=<number>`` in a record's note (e.g. ``graph_fwd_ms``, ``fwd_kernel_ms``,
    ``build_ms`` of ``dma_triton``), or None when the note has none."""
    m = re.search(rf"(?:^|[;\s]){re.escape(key)}=([0-9.eE+-]+)", record.get("note") or "")
    return float(m.group(1)) if m else None


def methods_in(records: list[dict]) -> list[str]:
    """Method names in first-seen order."""
    out: list[str] = []
    for r in records:
        if r["method"] not in out:
            out.append(r["method"])
    return out


def series(records: list[dict], method: str, phase: str = "fwd_ms", *, D: int = 128,
           window: int | str = 1024) -> tuple[list[int], list[float]]:
    """``(N list, ms list)`` of one method, measured points only, ascending N.

    ``window="dense"`` picks the dense-regime records (``window == N``) at every N.
    """
    pts = []
    for r in select(records, method=method, D=D):
        in_window = r["window"] == r["N"] if window == "dense" else r["window"] == window
        if in_window and r[phase] is not None:
            pts.append((r["N"], r[phase]))
    pts.sort()
    return [n for n, _ in pts], [t for _, t in pts]


def speedup(records: list[dict], method: str, phase: str = "fwd_ms", *, D: int = 128,
            window: int | str = 1024, baseline: str = "sdpa_cudnn") -> dict[int, float]:
    """``{N: baseline_ms / method_ms}`` where both were measured (same D, N, window)."""
    n_m, t_m = series(records, method, phase, D=D, window=window)
    n_b, t_b = series(records, baseline, phase, D=D, window=window)
    base = dict(zip(n_b, t_b))
    return {n: base[n] / t for n, t in zip(n_m, t_m) if n in base}


def _legend(ax) -> None:
    """A legend when something was drawn (a grid without measurements draws nothing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _log_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Log-log axes (x in powers of two) with labels and a light grid, as every plot here."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def _style(method: str) -> dict:
    colour, marker = STYLE.get(method, ("#7f7f7f", "x"))
    return {"color": colour, "marker": marker, "label": method}


def plot_time_vs_n(records: list[dict], *, D: int = 128, window: int | str = 1024,
                   floors: bool = True):
    """Median time vs N for every method, forward and forward+backward, log-log.

    With ``floors``, dashed lines show the compute/memory floors (``dma_ref.flops``) of dense
    causal attention and of DMA's block-gather work.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    Hq = records[0]["Hq"] if records else 8
    Hkv = records[0]["Hkv"] if records else 2
    for ax, phase in zip(axes, PHASES):
        for m in methods_in(records):
            n, t = series(records, m, phase, D=D, window=window)
            if n:
                ax.plot(n, t, **_style(m))
        if floors:
            ns = sorted({r["N"] for r in select(records, D=D)})
            bwd = phase == "fwdbwd_ms"
            if ns:
                dense = [flops.config_floors(N, None, D, Hq, Hkv, backward=bwd).ms for N in ns]
                ax.plot(ns, dense, "--", color="#1f77b4", alpha=0.5, label="floor: dense causal")
                ws = [N if window == "dense" else min(int(window), N) for N in ns]
                dma = [flops.config_floors(N, w, D, Hq, Hkv, backward=bwd).ms
                       for N, w in zip(ns, ws)]
                ax.plot(ns, dma, "--", color="#d62728", alpha=0.5, label="floor: DMA work")
        _log_axes(ax, "sequence length N", "median time (ms)",
                  f"{PHASE_LABEL[phase]}, D={D}, w={window}")
    _legend(axes[0])
    fig.tight_layout()
    return fig


def plot_speedup_vs_n(records: list[dict], *, D: int = 128, window: int | str = 1024,
                      baseline: str = "sdpa_cudnn", targets: bool = True):
    """Speed-up over ``baseline`` vs N for every method; DESIGN.md's targets as stars."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, phase in zip(axes, PHASES):
        for m in methods_in(records):
            if m == baseline:
                continue
            sp = speedup(records, m, phase, D=D, window=window, baseline=baseline)
            if sp:
                ax.plot(list(sp), list(sp.values()), **_style(m))
        ax.axhline(1.0, color="k", lw=0.8)
        if targets and D == 128 and window == 1024:
            idx = PHASES.index(phase)
            ax.scatter(list(TARGETS), [t[idx] for t in TARGETS.values()], marker="*", s=160,
                       color="gold", edgecolor="k", zorder=5, label="DESIGN.md target")
        _log_axes(ax, "sequence length N", f"speed-up over {baseline}",
                  f"{PHASE_LABEL[phase]}, D={D}, w={window}")
    _legend(axes[0])
    fig.tight_layout()
    return fig


def plot_speedup_vs_window(records: list[dict], *, D: int = 128, method: str = "dma_triton",
                           baseline: str = "sdpa_cudnn"):
    """Speed-up of ``method`` over ``baseline`` vs w, one line per N (w = N is the dense regime)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    ns = sorted({r["N"] for r in select(records, D=D, method=method)})
    for ax, phase in zip(axes, PHASES):
        for N in ns:
            base = {r["window"]: r[phase] for r in select(records, D=D, N=N, method=baseline)}
            pts = sorted((r["window"], base[r["window"]] / r[phase])
                         for r in select(records, D=D, N=N, method=method)
                         if r[phase] is not None and base.get(r["window"]) is not None)
            if pts:
                ax.plot([w for w, _ in pts], [s for _, s in pts], marker="o", label=f"N={N}")
        ax.axhline(1.0, color="k", lw=0.8)
        _log_axes(ax, "window w (w = N: dense regime)", f"{method} speed-up over {baseline}",
                  f"{PHASE_LABEL[phase]}, D={D}")
    _legend(axes[0])
    fig.tight_layout()
    return fig


def table_rows(records: list[dict], *, D: int = 128, window: int | str = 1024,
               baseline: str = "sdpa_cudnn") -> list[dict]:
    """One row per (N, method): times, speed-ups over ``baseline`` and the note."""
    rows = []
    ns = sorted({r["N"] for r in select(records, D=D)})
    for N in ns:
        w = N if window == "dense" else window
        recs = select(records, D=D, N=N, window=w)
        base = {p: next((r[p] for r in recs if r["method"] == baseline), None) for p in PHASES}
        for r in recs:
            row = {"N": N, "window": w, "method": r["method"], "fwd_ms": r["fwd_ms"],
                   "fwdbwd_ms": r["fwdbwd_ms"], "note": r["note"]}
            for p in PHASES:
                ok = r[p] is not None and base[p] is not None
                row["x_" + p] = base[p] / r[p] if ok else None
            rows.append(row)
    return rows


def format_table(rows: list[dict], *, notes: bool = False) -> str:
    """Markdown table of ``table_rows`` (``-`` for not measured)."""
    def ms(t):
        return "-" if t is None else f"{t:.3f}"

    def x(s):
        return "-" if s is None else f"{s:.2f}x"
    head = "| N | w | method | fwd ms | fwd+bwd ms | fwd speed-up | fwd+bwd speed-up |"
    sep = "|---|---|---|---|---|---|---|"
    if notes:
        head, sep = head + " note |", sep + "---|"
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['N']} | {r['window']} | {r['method']} | {ms(r['fwd_ms'])} | "
                f"{ms(r['fwdbwd_ms'])} | {x(r['x_fwd_ms'])} | {x(r['x_fwdbwd_ms'])} |")
        if notes:
            line += f" {r['note']} |"
        lines.append(line)
    return "\n".join(lines)


def work_rows(ns=(4096, 16384, 65536, 131072), windows=(256, 1024, 4096), *, D: int = 128,
              Hq: int = 8, Hkv: int = 2, BM: int = 128) -> list[dict]:
    """Per (N, w): pair counts, the dense/DMA work ratio and the forward and forward+backward
    floors (ms) of dense causal attention and of DMA (``dma_ref.flops``)."""
    rows = []
    for N in ns:
        for w in windows:
            w = min(w, N)
            row = {"N": N, "w": w, "causal_pairs": flops.causal_pairs(N),
                   "kept_pairs": flops.dma_kept_pairs(N, w),
                   "work_pairs": flops.dma_work_pairs(N, w, BM),
                   "ratio": flops.work_ratio(N, w, BM)}
            for bwd, tag in ((False, "fwd"), (True, "fwdbwd")):
                dense = flops.config_floors(N, None, D, Hq, Hkv, backward=bwd, BM=BM)
                dma = flops.config_floors(N, w, D, Hq, Hkv, backward=bwd, BM=BM)
                row[f"dense_{tag}_floor_ms"], row[f"dma_{tag}_floor_ms"] = dense.ms, dma.ms
                row[f"dma_{tag}_bound"] = dma.bound
            rows.append(row)
    return rows


def plot_work_ratio(windows=(256, 1024, 4096), *, n_min: int = 512, n_max: int = 262144,
                    BM: int = 128):
    """Dense causal pairs over DMA's block-gather work vs N, one line per w: DMA's ceiling on
    speed-up from skipping work (1 = no gain, 2 = half the work)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ns = [2 ** k for k in range(n_min.bit_length() - 1, n_max.bit_length())]
    for w in windows:
        ax.plot(ns, [flops.work_ratio(N, w, BM) for N in ns], marker=".", label=f"w={w}")
        ax.axvline(flops.crossover_n(w, BM), ls=":", color=ax.lines[-1].get_color(), lw=1)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(2.0, color="k", lw=0.8, ls="--")
    _log_axes(ax, "sequence length N", "dense causal work / DMA work",
              f"work ratio (BM={BM}); dotted: crossover N = 4(w+BM)-1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def make_all(records: list[dict], folder: str = "bench") -> list[Path]:
    """Save the standard plots under ``figures/<folder>/`` and return their paths."""
    paths = []
    for D in sorted({r["D"] for r in records}, reverse=True):
        figs = ((f"time_vs_n_d{D}_w1024", plot_time_vs_n(records, D=D, window=1024)),
                (f"time_vs_n_d{D}_dense", plot_time_vs_n(records, D=D, window="dense")),
                (f"speedup_vs_n_d{D}_w1024", plot_speedup_vs_n(records, D=D, window=1024)),
                (f"speedup_vs_w_d{D}", plot_speedup_vs_window(records, D=D)))
        for name, fig in figs:
            paths.append(save_figure(fig, f"{folder}/{name}.png"))
            plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dma_ref.viz.perf",
                                description=__doc__.split("\n")[0])
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    for path in make_all(load_records(args.json)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
