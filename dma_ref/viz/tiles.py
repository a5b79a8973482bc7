"""Pictures of tiles, unions of kept keys and GQA packing (notebooks 04 and 06).

``union_growth`` computes what the union-versus-N figure draws (a pure function); the
``plot_*`` functions return matplotlib figures. Heatmap convention as in ``viz.masks``: rows are
query positions (top = first token), columns are keys.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle

from ..lifetimes import key_lifetimes, mask_from_lifetimes
from ..numerics import cdiv
from ..tiling import (
    TILE_EMPTY,
    TILE_FUTURE,
    TILE_KEPT,
    block_positions,
    tile_map,
    tile_stats,
    union_keys,
)

TILE_COLORS = {TILE_FUTURE: "#ffffff", TILE_EMPTY: "#d9d9d9", TILE_KEPT: "#2b6cb0"}


def plot_tile_map(e: torch.Tensor, block_m: int, block_n: int, *, pairs_max: int = 4096):
    """Two panels for one head's lifetimes ``e [K]``: the kept pairs, and the ``BM x BN`` tiles
    with at least one kept pair (what block-sparse "skip the empty tiles" kernels must compute).

    The pair panel is drawn only when ``K <= pairs_max`` (it needs a K x K picture).
    """
    K = e.shape[-1]
    tm = tile_map(e, block_m, block_n).cpu().numpy()
    st = tile_stats(e[None], block_m, block_n)
    show_pairs = K <= pairs_max
    fig, axes = plt.subplots(1, 2 if show_pairs else 1, figsize=(11 if show_pairs else 5.5, 5.2))
    axes = np.atleast_1d(axes)
    if show_pairs:
        mask = mask_from_lifetimes(e[None, None])[0, 0].cpu().numpy()
        axes[0].imshow(mask, cmap=ListedColormap(["#ffffff", "#2b6cb0"]), interpolation="nearest",
                       extent=(0, K, K, 0))
        axes[0].set_title(f"kept pairs: {100 * st['kept_fraction']:.1f}% of the causal pairs")
        axes[0].set_xlabel("key j")
        axes[0].set_ylabel("query position p")
    ax = axes[-1]
    cmap = ListedColormap([TILE_COLORS[TILE_FUTURE], TILE_COLORS[TILE_EMPTY], TILE_COLORS[TILE_KEPT]])
    ax.imshow(tm, cmap=cmap, vmin=0, vmax=2, interpolation="nearest",
              extent=(0, tm.shape[1] * block_n, tm.shape[0] * block_m, 0))
    ax.set_title(f"{block_m}x{block_n} tiles with >= 1 kept pair: {100 * st['tile_fraction']:.1f}% "
                 "of the causal tiles")
    ax.set_xlabel("key j")
    ax.set_ylabel("query position p")
    ax.legend(handles=[Patch(color=TILE_COLORS[TILE_KEPT], label="must be computed"),
                       Patch(color=TILE_COLORS[TILE_EMPTY], label="skippable (no kept pair)")],
              loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_block_union(e: torch.Tensor, block: int, block_m: int):
    """The mask of one head (``e [K]``, small K) with one query block's rows highlighted and the
    columns of its union ``U = {j <= p_max : e_j > max(j, p_min)}`` marked below the picture."""
    K = e.shape[-1]
    mask = mask_from_lifetimes(e[None, None])[0, 0].cpu().numpy()
    p_min, p_max = block_positions(block, block_m, K, K)
    U = union_keys(e, p_min, p_max).cpu().numpy()
    fig, (ax, ax_u) = plt.subplots(2, 1, figsize=(6.5, 7.2), sharex=True,
                                   gridspec_kw={"height_ratios": [6, 0.6]})
    ax.imshow(mask, cmap=ListedColormap(["#ffffff", "#9ab8d9"]), interpolation="nearest",
              extent=(-0.5, K - 0.5, K - 0.5, -0.5))
    rows = mask[p_min:p_max + 1]
    ax.imshow(np.where(rows, 1.0, np.nan), cmap=ListedColormap(["#1a4f8a"]), interpolation="nearest",
              extent=(-0.5, K - 0.5, p_max + 0.5, p_min - 0.5))
    ax.add_patch(Rectangle((-0.5, p_min - 0.5), K, p_max - p_min + 1, fill=False, ec="#d62728", lw=1.5))
    ax.set_ylim(K - 0.5, -0.5)
    ax.set_ylabel("query position p")
    ax.set_title(f"query block {block} (p = {p_min}..{p_max}) keeps {len(U)} distinct keys")
    ax_u.bar(U, np.ones(len(U)), width=1.0, color="#d62728")
    ax_u.set_yticks([])
    ax_u.set_xlabel("key j   (red: the union U gathered for this block)")
    fig.tight_layout()
    return fig


def union_growth(Ns: list[int], window: int, block_m: int, block_n: int, *, Hkv: int = 2,
                 seed: int = 0) -> dict[str, list[float]]:
    """Tile statistics of random-score DMA masks for each N (lifetimes only, no N x N tensor).

    Returns lists aligned with ``Ns``: ``union_mean``, ``union_max``, ``kept_fraction``,
    ``tile_fraction``, ``work_ratio`` (pairs visited by a union kernel over causal pairs) and
    ``causal_mean`` (mean causal keys per query block, what a dense kernel visits).
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, list[float]] = {k: [] for k in ("union_mean", "union_max", "kept_fraction",
                                                    "tile_fraction", "work_ratio", "causal_mean")}
    for N in Ns:
        e = key_lifetimes(torch.randn(1, Hkv, N, generator=g), window)
        st = tile_stats(e, block_m, block_n)
        for key in ("union_mean", "union_max", "kept_fraction", "tile_fraction", "work_ratio"):
            out[key].append(float(st[key]))
        n_blocks = cdiv(N, block_m)
        out["causal_mean"].append(float(np.mean([block_positions(b, block_m, N, N)[1] + 1
                                                 for b in range(n_blocks)])))
    return out


def plot_union_growth(Ns: list[int], data: dict[str, list[float]], window: int, block_m: int):
    """Left: keys a query block must visit, union (mean, max) vs all causal keys, against N.
    Right: work in (query, key) pairs, union kernel vs dense causal, ``O(N w)`` vs ``O(N^2 / 2)``."""
    Ns_a = np.asarray(Ns, dtype=float)
    fig, (ax, ax_w) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    ax.plot(Ns_a, data["causal_mean"], "o-", color="#7f7f7f", label="dense causal: keys per block (mean)")
    ax.plot(Ns_a, data["union_mean"], "o-", color="#2b6cb0", label="DMA union |U| (mean)")
    ax.plot(Ns_a, data["union_max"], "s--", color="#2b6cb0", alpha=0.6, label="DMA union |U| (max)")
    ax.axhline(window, color="k", lw=0.8, ls=":", label=f"w = {window}")
    ax.axhline(window + block_m - 1, color="#d62728", lw=0.8, ls="--", label=f"bound w + BM - 1 = {window + block_m - 1}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("sequence length N")
    ax.set_ylabel(f"keys visited per {block_m}-query block")
    ax.legend(fontsize=8)
    ax.set_title("the union stays near w; the causal row grows with N")
    dense = Ns_a * (Ns_a + 1) / 2
    union = np.asarray(data["work_ratio"]) * dense
    ax_w.plot(Ns_a, dense, "o-", color="#7f7f7f", label="dense causal: N(N+1)/2 pairs")
    ax_w.plot(Ns_a, union, "o-", color="#2b6cb0", label="union kernel: sum over blocks of BM |U|")
    for x, d, u in zip(Ns_a, dense, union):
        ax_w.annotate(f"{d / u:.1f}x", (x, u), textcoords="offset points", xytext=(0, -13),
                      ha="center", fontsize=8, color="#2b6cb0")
    ax_w.set_xscale("log", base=2)
    ax_w.set_yscale("log")
    ax_w.set_xlabel("sequence length N")
    ax_w.set_ylabel("(query, key) pairs computed")
    ax_w.legend(fontsize=8)
    ax_w.set_title("work: O(N w) against O(N^2 / 2)")
    fig.tight_layout()
    return fig


def plot_gqa_packing(G: int = 4, block_m: int = 4, block_n: int = 4):
    """Diagram: the G query heads of one KV group, each a ``BM``-row block, stacked into one
    ``[G * BM, D]`` program block that multiplies the same gathered ``[BN, D]`` K chunk."""
    fig, ax = plt.subplots(figsize=(9, 4.6))
    colors = plt.cm.tab10(np.arange(G))
    h_row = 0.35
    for g in range(G):
        y = g * block_m * h_row
        ax.add_patch(Rectangle((0, y), 2.0, block_m * h_row, fc=colors[g], ec="k", alpha=0.75))
        ax.text(1.0, y + block_m * h_row / 2, f"query head {g}: rows i..i+{block_m - 1}",
                ha="center", va="center", fontsize=8)
    total = G * block_m * h_row
    ax.text(1.0, -0.1, f"one program: q rows [G*BM, D] = [{G * block_m}, D]", ha="center", va="bottom",
            fontsize=9)
    # the gathered key chunk, transposed
    ax.add_patch(Rectangle((3.0, total + 0.8), block_n * 0.5, 1.4, fc="#c7d8ea", ec="k"))
    ax.text(3.0 + block_n * 0.25, total + 1.5, "K[U chunk]^T\n[D, BN]", ha="center", va="center", fontsize=8)
    # the logits block
    ax.add_patch(Rectangle((3.0, 0), block_n * 0.5, total, fc="#eef3f8", ec="k"))
    for g in range(1, G):
        ax.plot([3.0, 3.0 + block_n * 0.5], [g * block_m * h_row] * 2, color="k", lw=0.6)
    ax.text(3.0 + block_n * 0.25, total / 2, "logits\n[G*BM, BN]", ha="center", va="center", fontsize=8)
    ax.annotate("", xy=(2.95, total / 2), xytext=(2.05, total / 2), arrowprops={"arrowstyle": "->"})
    # the shared key/value memory
    x0 = 3.6 + block_n * 0.5
    ax.add_patch(Rectangle((x0, 0), 2.2, total, fc="#f7f7f7", ec="k"))
    ax.text(x0 + 1.1, -0.1, "K, V of the KV head (HBM)", ha="center", va="bottom", fontsize=9)
    rng = np.random.default_rng(1)
    for y in np.sort(rng.choice(np.arange(int(total / 0.12)), size=block_n, replace=False)) * 0.12:
        ax.add_patch(Rectangle((x0 + 0.1, y), 2.0, 0.1, fc="#2b6cb0"))
    ax.annotate("gathered once,\nused by all G heads", xy=(3.0 + block_n * 0.5, total + 1.5),
                xytext=(x0 + 1.1, total + 1.5), ha="center", va="center", fontsize=8,
                arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.2, x0 + 2.5)
    ax.set_ylim(total + 2.5, -0.6)
    ax.axis("off")
    ax.set_title(f"GQA packing: G = {G} query heads share each gathered K/V chunk (BN = {block_n} keys)")
    fig.tight_layout()
    return fig


def key_major_rows(e: torch.Tensor, Q: int, block_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The query rows a key-major program must visit: int64 ``(lo, hi)`` ``[cdiv(K, block_n)]``.

    e ``[K]`` (one head's lifetimes); row i sits at position ``K - Q + i``. Key j is kept by the
    positions ``[j, e_j)``, so the block of keys ``[j0, j0 + block_n)`` is read by rows
    ``[max(j0 - (K - Q), 0), min(max_j e_j - (K - Q), Q))`` (empty when ``lo >= hi``).
    """
    K = e.shape[-1]
    j0 = torch.arange(0, K, block_n)
    e_max = torch.stack([e[a:a + block_n].max() for a in j0.tolist()]).cpu()
    lo = torch.clamp(j0 - (K - Q), min=0)
    hi = torch.clamp(e_max - (K - Q), max=Q)
    return lo, torch.maximum(hi, lo)


def plot_key_major_rows(e: torch.Tensor, Q: int, block_n: int):
    """One head's kept pairs ``[Q, K]`` (rows at positions ``K - Q + i``) with, for every block
    of ``block_n`` keys, the contiguous row range its key-major program walks (``key_major_rows``),
    and the share of visited pairs that are kept."""
    K = e.shape[-1]
    mask = mask_from_lifetimes(e[None, None])[0, 0, K - Q:].cpu().numpy()
    lo, hi = key_major_rows(e, Q, block_n)
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * Q / K + 1.2))
    ax.imshow(mask, cmap=ListedColormap(["#ffffff", "#2b6cb0"]), interpolation="nearest",
              extent=(0, K, Q, 0))
    visited = 0
    for b, (a, z) in enumerate(zip(lo.tolist(), hi.tolist())):
        width = min(block_n, K - b * block_n)
        visited += width * (z - a)
        ax.add_patch(Rectangle((b * block_n, a), width, z - a, fill=False, ec="#d62728", lw=1.5))
        ax.text(b * block_n + width / 2, a + 0.3, f"{z - a} rows", ha="center", va="top",
                fontsize=7, color="#d62728")
    kept = int(mask.sum())
    ax.set_xlabel("key j")
    ax.set_ylabel(f"query row i (position {K - Q} + i)")
    ax.set_title(f"key-major: each block of {block_n} keys walks the rows [lo, hi) of its "
                 f"lifetimes (red);\n{kept} kept pairs of {visited} visited "
                 f"({100 * kept / max(visited, 1):.0f}%)", fontsize=10)
    return fig
