"""Pictures of the paper comparison (notebook 12): what the five methods keep, and the recorded
perplexity, passkey and MQAR experiments of ``dma_ref.lab.paper``.

Mask pictures follow the other notebooks: rows are query positions, columns keys, a dark cell
means "query p reads key j". For NSA the cell's value says through which branch: 1/3 only a
compressed block's summary, 2/3 the sliding window, 1 a selected block (full tokens).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..lab.paper.records import METHODS
from ..mask import dma_mask, sliding_window_mask
from ..nn import MultiHeadLatentAttention, NativeSparseAttention
from .masks import draw_mask

NAMES = {"mha": "MHA", "swa": "SWA", "mla": "MLA", "nsa": "NSA", "dma": "DMA"}
COLORS = {"mha": "tab:gray", "swa": "tab:orange", "mla": "tab:purple", "nsa": "tab:green",
          "dma": "tab:blue"}


def five_masks(N: int = 64, window: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 ``[N, N]`` per method, for one head of random untrained layers on random input
    (generator ``seed``): MHA and MLA every past key, SWA the ``window`` most recent, DMA the
    ``window`` best-scored past keys (scores ~ N(0, 1)), NSA its branches (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    causal = torch.ones(N, N).tril()
    torch.manual_seed(seed)
    nsa = NativeSparseAttention(16, 2, 1, window=window)
    q, k, _, _ = nsa.project(torch.randn(1, N, 16, generator=g))
    sets = nsa.kept(q, k)
    nsa_map = torch.maximum(sets["compressed"][0, 0].float() / 3,
                            sets["window"][0, 0].float() * 2 / 3)
    nsa_map = torch.maximum(nsa_map, sets["selected"][0, 0].float())
    s = torch.randn(1, 1, N, generator=g)
    return {"mha": causal, "swa": sliding_window_mask(N, window).float(), "mla": causal,
            "nsa": nsa_map, "dma": dma_mask(s, window)[0, 0].float()}


def plot_five_masks(N: int = 64, window: int = 16, seed: int = 0):
    """The five masks side by side (:func:`five_masks`), with the keys each query reads."""
    masks = five_masks(N, window, seed)
    mla = MultiHeadLatentAttention(64, 4)
    notes = {"mha": "every past key", "swa": f"last w = {window}",
             "mla": f"every past key (k, v from a\n{mla.d_c}-wide latent at width 64)",
             "nsa": "summaries (light), window (mid),\nselected blocks (dark)",
             "dma": f"w = {window} best-scored past keys"}
    fig, axes = plt.subplots(1, 5, figsize=(17, 4))
    for ax, m in zip(axes, METHODS):
        draw_mask(ax, masks[m], f"{NAMES[m]}: {notes[m]}")
    fig.suptitle(f"What each method reads (N = {N}, one head; rows: queries, columns: keys)")
    fig.tight_layout()
    return fig


def plot_perplexity(record: dict):
    """Validation loss against training FLOPs (the curve of each method), and the final
    perplexity per method with its forward FLOPs per token."""
    res = record["results"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    for m in METHODS:
        if m not in res:
            continue
        c = res[m]["curve"]
        ax.plot([p["train_flops"] for p in c], [p["val_loss"] for p in c], "-o", ms=3,
                color=COLORS[m], label=NAMES[m])
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (3 x forward, per token x tokens)")
    ax.set_ylabel("validation loss (nats / byte)")
    ax.set_title("loss vs compute (Fig. 5 in spirit)")
    ax.legend()
    methods = [m for m in METHODS if m in res]
    ppl = [res[m]["perplexity"] for m in methods]
    bars = bx.bar([NAMES[m] for m in methods], ppl, color=[COLORS[m] for m in methods])
    for b, m in zip(bars, methods):
        bx.annotate(f"{res[m]['perplexity']:.2f}\n{res[m]['flops_per_token'] / 1e3:.0f} kFLOP/tok",
                    (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                    fontsize=8)
    bx.set_ylim(min(ppl) * 0.9, max(ppl) * 1.08)
    bx.set_ylabel("validation perplexity (bytes)")
    cfg = record["config"]
    bx.set_title(f"context {cfg['seq_len']}, window {cfg['window']}, equal parameters")
    fig.tight_layout()
    return fig


def plot_passkey(record: dict):
    """Exact-match heatmaps per method: rows the evaluation lengths, columns the needle depths
    (Fig. 8 layout); the training length's row is marked."""
    res, cfg = record["results"], record["config"]
    lengths, depths = record["lengths"], cfg["depths"]
    methods = [m for m in METHODS if m in res]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 3.6), squeeze=False)
    for ax, m in zip(axes[0], methods):
        grid = np.array(res[m]["grid"])
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(depths)), [f"{round(100 * d)}%" for d in depths])
        ax.set_yticks(range(len(lengths)),
                      [f"{L}{' (train)' if L == cfg['train_len'] else ''}" for L in lengths])
        ax.set_xlabel("needle depth")
        ax.set_title(NAMES[m])
    axes[0][0].set_ylabel("sequence length")
    fig.suptitle(f"passkey exact match ({cfg['digits']} digits; w = {cfg['window']} for SWA, "
                 f"NSA, DMA; trained at {cfg['train_len']})")
    fig.tight_layout()
    return fig


def mqar_table(record: dict) -> list[dict]:
    """One row per grid point: ``{"seq_len", "pairs", "window", "d_model", "mha": acc, ...}``,
    sorted by (N, P, w, width); windowless methods repeated at every window of their
    (N, P, width)."""
    rows: dict[tuple, dict] = {}
    for m in METHODS:
        for r in record["results"].get(m, {}).values():
            if m in ("mha", "mla"):
                continue
            key = (r["seq_len"], r["pairs"], r["window"], r["d_model"])
            rows.setdefault(key, {"seq_len": r["seq_len"], "pairs": r["pairs"],
                                  "window": r["window"], "d_model": r["d_model"]})[m] = r["accuracy"]
    for m in ("mha", "mla"):
        for r in record["results"].get(m, {}).values():
            for row in rows.values():
                if (row["seq_len"], row["pairs"], row["d_model"]) == (r["seq_len"], r["pairs"],
                                                                      r["d_model"]):
                    row[m] = r["accuracy"]
    return [rows[k] for k in sorted(rows)]


def mqar_markdown(record: dict) -> str:
    """The grid as a markdown table (the README's): one row per (N, P, w, width), the accuracy
    of each method to two decimals, ``-`` where the record has no run."""
    head = "| N | P | w | width | " + " | ".join(m.upper() for m in METHODS) + " |"
    lines = [head, "|" + "---|" * (4 + len(METHODS))]
    for r in mqar_table(record):
        accs = [f"{r[m]:.2f}" if m in r else "-" for m in METHODS]
        lines.append(f"| {r['seq_len']} | {r['pairs']} | {r['window']} | {r['d_model']} | "
                     + " | ".join(accs) + " |")
    return "\n".join(lines)


def plot_mqar(record: dict):
    """Accuracy against model width, one panel per (N, P, w) (Fig. 6 layout: columns the
    sequence lengths), one line per method."""
    rows = mqar_table(record)
    Ns = sorted({r["seq_len"] for r in rows})
    panels = {N: sorted({(r["pairs"], r["window"]) for r in rows if r["seq_len"] == N}) for N in Ns}
    n_rows = max(len(v) for v in panels.values())
    fig, axes = plt.subplots(n_rows, len(Ns), figsize=(4.2 * len(Ns), 3.0 * n_rows),
                             squeeze=False, sharey=True)
    for c, N in enumerate(Ns):
        for r in range(len(panels[N]), n_rows):
            axes[r][c].set_visible(False)
        for r, (P, w) in enumerate(panels[N]):
            ax = axes[r][c]
            pts = sorted((x for x in rows if (x["seq_len"], x["pairs"], x["window"]) == (N, P, w)),
                         key=lambda x: x["d_model"])
            for m in METHODS:
                if all(m in x for x in pts):
                    ax.plot([x["d_model"] for x in pts], [x[m] for x in pts], "-o",
                            color=COLORS[m], label=NAMES[m])
            ax.set_title(f"N = {N}, P = {P}, w = {w} ({'w < P' if w < P else 'w >= P'})")
            ax.set_xticks([x["d_model"] for x in pts])
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("model width")
    for r in range(n_rows):
        axes[r][0].set_ylabel("MQAR accuracy")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


PLOTS = {"perplexity": plot_perplexity, "passkey": plot_passkey, "mqar": plot_mqar}


def save_experiment_figures(name: str, record: dict, out: Path) -> Path:
    """Draw experiment ``name``'s record and save it as ``out/<name>.png``."""
    fig = PLOTS[name](record)
    path = Path(out) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
