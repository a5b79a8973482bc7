"""Pictures of a Triton kernel's index arithmetic (the Triton primer): which program handles
which element, the offsets ``i * stride_m + j * stride_n`` of one tile under different memory
layouts, and the tiles of a bottom-right causal logit matrix; and the package kernel's tricks
(notebook 06): the diagonal split of a union, logits in base 2, the autotuning candidates, the
thresholds and lifetimes of the mask builder.

``program_owner`` and ``tile_offsets`` compute what is drawn (pure functions); the ``plot_*``
functions return matplotlib figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle

from ..lifetimes import mask_from_lifetimes
from ..numerics import cdiv

MASKED = "#d9d9d9"


def program_owner(N: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a 1-D launch of ``cdiv(N, block)`` programs: ``(owner, valid)``, int64 and bool
    ``[n_programs * block]``; lane ``t`` of the launch belongs to program ``t // block`` and is
    valid (inside the tensor) iff ``t < N``."""
    if N < 1 or block < 1:
        raise ValueError(f"N and block must be >= 1, got N={N}, block={block}")
    lanes = torch.arange(cdiv(N, block) * block)
    return lanes // block, lanes < N


def plot_program_map(N: int, block: int):
    """One row of cells, one per lane of the launch, coloured by program; lanes past ``N``
    (the ragged edge that ``mask=offs < N`` switches off) are grey and hatched."""
    owner, valid = program_owner(N, block)
    n_prog = int(owner.max()) + 1
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(owner)), 1.9))
    for t, (p, ok) in enumerate(zip(owner.tolist(), valid.tolist())):
        ax.add_patch(Rectangle((t, 0), 1, 1, facecolor=colors(p % 10) if ok else MASKED,
                               edgecolor="white", hatch=None if ok else "//", alpha=0.85))
        ax.text(t + 0.5, 0.5, str(t), ha="center", va="center", fontsize=8)
    for p in range(n_prog):
        ax.text(p * block + block / 2, 1.25, f"program {p}", ha="center", fontsize=9)
    ax.set_xlim(0, len(owner))
    ax.set_ylim(-0.1, 1.6)
    ax.axis("off")
    ax.set_title(f"offs = program_id * BLOCK + arange(BLOCK): N = {N}, BLOCK = {block}, "
                 f"grid = ({n_prog},); grey lanes fail offs < N", fontsize=10)
    return fig


def tile_offsets(row0: int, col0: int, BM: int, BN: int, stride_m: int, stride_n: int,
                 M: int, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pointer offsets and the mask of the ``[BM, BN]`` tile at ``(row0, col0)`` of an
    ``[M, N]`` tensor with strides ``(stride_m, stride_n)``: int64 and bool ``[BM, BN]``,
    exactly ``rows[:, None] * stride_m + cols[None, :] * stride_n`` and
    ``(rows[:, None] < M) & (cols[None, :] < N)``."""
    rows = row0 + torch.arange(BM)
    cols = col0 + torch.arange(BN)
    offsets = rows[:, None] * stride_m + cols[None, :] * stride_n
    return offsets, (rows[:, None] < M) & (cols[None, :] < N)


def plot_tile_offsets(M: int, N: int, BM: int, BN: int, row0: int, col0: int,
                      layouts: dict[str, tuple[int, int]]):
    """One panel per layout (name -> strides): the ``[M, N]`` tensor, the tile at
    ``(row0, col0)`` outlined, each tile cell labelled with its offset from the data pointer;
    cells that fail the mask are grey (their offsets would land outside the tensor)."""
    fig, axes = plt.subplots(1, len(layouts), figsize=(5.2 * len(layouts), 4.4))
    for ax, (name, (sm, sn)) in zip(np.atleast_1d(axes), layouts.items()):
        offsets, ok = tile_offsets(row0, col0, BM, BN, sm, sn, M, N)
        H, W = max(M, row0 + BM), max(N, col0 + BN)
        inside = np.zeros((H, W))
        inside[:M, :N] = 1
        ax.imshow(inside, cmap=ListedColormap(["#ffffff", "#e8f0fa"]), vmin=0, vmax=1,
                  extent=(0, W, H, 0))
        for a in range(BM):
            for b in range(BN):
                r, c = row0 + a, col0 + b
                if not ok[a, b]:
                    ax.add_patch(Rectangle((c, r), 1, 1, facecolor=MASKED, hatch="//"))
                ax.text(c + 0.5, r + 0.5, str(int(offsets[a, b])), ha="center", va="center",
                        fontsize=7, color="#1a365d" if ok[a, b] else "#777777")
        ax.add_patch(Rectangle((col0, row0), BN, BM, fill=False, edgecolor="#c53030", lw=2))
        ax.add_patch(Rectangle((0, 0), N, M, fill=False, edgecolor="#2b6cb0", lw=1.5))
        ax.set_xticks(range(W))
        ax.set_yticks(range(H))
        ax.tick_params(labelsize=7)
        ax.grid(color="#cccccc", lw=0.5)
        ax.set_title(f"{name}: strides ({sm}, {sn})", fontsize=10)
        ax.set_xlabel("column j")
        ax.set_ylabel("row i")
    fig.legend(handles=[Patch(facecolor="#e8f0fa", edgecolor="#2b6cb0", label="the tensor"),
                        Patch(facecolor=MASKED, hatch="//", label="masked (outside)")],
               loc="lower center", ncol=2, fontsize=8)
    fig.suptitle(f"offsets of the {BM}x{BN} tile at ({row0}, {col0}) of a {M}x{N} tensor: "
                 "i * stride_m + j * stride_n", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return fig


def plot_logit_tiles(Q: int, K: int, BM: int, BN: int):
    """The ``[Q, K]`` logits of one head tiled by a ``(cdiv(Q, BM), cdiv(K, BN))`` grid:
    pairs with ``j <= K - Q + i`` (bottom-right causal) in blue, masked ones white, lanes of the
    last tiles past Q or K grey; each tile labelled with its program ids."""
    Hp, Wp = cdiv(Q, BM) * BM, cdiv(K, BN) * BN
    i = np.arange(Hp)[:, None]
    j = np.arange(Wp)[None, :]
    picture = np.where((i < Q) & (j < K), np.where(j <= K - Q + i, 2, 1), 0)
    fig, ax = plt.subplots(figsize=(7, 7 * Hp / Wp + 0.8))
    ax.imshow(picture, cmap=ListedColormap([MASKED, "#ffffff", "#2b6cb0"]), vmin=0, vmax=2,
              interpolation="nearest", extent=(0, Wp, Hp, 0))
    for a in range(cdiv(Q, BM)):
        for b in range(cdiv(K, BN)):
            ax.add_patch(Rectangle((b * BN, a * BM), BN, BM, fill=False, edgecolor="#c53030"))
            ax.text(b * BN + BN / 2, a * BM + BM / 2, f"({a}, {b})", ha="center", va="center",
                    fontsize=9, color="#c53030")
    ax.set_xlabel("key j")
    ax.set_ylabel("query row i (position K - Q + i)")
    ax.set_title(f"Q = {Q}, K = {K}, BM = {BM}, BN = {BN}: blue = kept, white = -inf, "
                 "grey = outside (masked lanes)", fontsize=10)
    return fig


# ------------------------------------------------------- the package kernel's tricks (notebook 06)

def plot_diagonal_split(e: torch.Tensor, Q: int, block_m: int, lists: list[torch.Tensor]):
    """One head's kept pairs ``[Q, K]`` (rows at positions ``K - Q + i``) and, per query block,
    how the package kernel visits its union: the off-diagonal list ``lists[b]`` (keys ``< p_min``,
    gathered by index: red ticks) and the diagonal range ``[p_min, p_max]`` (read contiguously:
    a green bar)."""
    K = e.shape[-1]
    mask = mask_from_lifetimes(e[None, None])[0, 0, K - Q:].cpu().numpy()
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * Q / K + 1.2))
    ax.imshow(mask, cmap=ListedColormap(["#ffffff", "#9ab8d9"]), interpolation="nearest",
              extent=(0, K, Q, 0))
    for b, listed in enumerate(lists):
        i0, i1 = b * block_m, min(Q, (b + 1) * block_m)
        p_min, p_max = K - Q + i0, K - Q + i1 - 1
        ax.add_patch(Rectangle((p_min, i0), p_max - p_min + 1, i1 - i0, fc="#38a169", alpha=0.35,
                               ec="#276749"))
        for j in listed.tolist():
            ax.plot([j + 0.5, j + 0.5], [i0 + 0.15, i1 - 0.15], color="#d62728", lw=1.2)
        ax.axhline(i0, color="#555555", lw=0.5)
    ax.set_xlabel("key j")
    ax.set_ylabel(f"query row i (position {K - Q} + i)")
    ax.set_title("per query block: red = off-diagonal list (gathered by index),\n"
                 "green = diagonal range [p_min, p_max] (contiguous); blue = kept pairs",
                 fontsize=10)
    return fig


def log2_unit_error(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For one row of logits ``x`` ``[K]``: the fp32 weights ``exp(x - m)``, ``exp2(x log2(e) - m2)``
    (the kernels' base-2 units) and float64 ``[2, K]``: their relative difference and a bound on
    it, ``(|x| + |m| + 3 |x - m| + 4) 2^-24``.

    The bound adds, in units of u = 2^-24: rounding ``x log2(e)`` and ``m log2(e)`` (``|x|`` and
    ``|m|``: they are rounded at the size of x, not of x - m), the fp32 value of log2(e) and the
    two subtractions (``|x - m|`` each), and one ulp (2u) for each exponential.
    """
    x = x.float()
    natural = torch.exp(x - x.max())
    x2 = x * 1.4426950408889634
    base2 = torch.exp2(x2 - x2.max())
    rel = (base2.double() - natural.double()).abs() / natural.double()
    xd = x.double()
    m = xd.max()
    bound = (xd.abs() + m.abs() + 3 * (xd - m).abs() + 4) * 2.0**-24
    return natural, base2, torch.stack([rel, bound])


def plot_log2_units(x: torch.Tensor):
    """Softmax weights of one row of logits ``x`` computed as ``exp(x - m)`` and as
    ``exp2(x log2(e) - m2)``, and their relative difference in fp32 against the bound of
    ``log2_unit_error``."""
    natural, base2, (rel, bound) = log2_unit_error(x)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    a.plot(natural.numpy(), "o", label="exp(x - m)", ms=6, mfc="none")
    a.plot(base2.numpy(), ".", label="exp2(x log2 e - m2)", color="#d62728")
    a.set_xlabel("key")
    a.set_ylabel("unnormalised weight")
    a.legend(fontsize=8)
    a.set_title("the same weights in base 2", fontsize=10)
    b.semilogy(np.maximum(rel.numpy(), 1e-10), "o", ms=4, label="relative difference (floor 1e-10)")
    b.semilogy(bound.numpy(), "_", ms=10, color="#555555", label="(|x| + |m| + 3|x - m| + 4) 2^-24")
    b.set_xlabel("key")
    b.legend(fontsize=8)
    b.set_title("fp32: within the rounding of the exponent's argument", fontsize=10)
    fig.tight_layout()
    return fig


def plot_tuning_candidates(rows: list[dict], budget: int):
    """Bars: the estimated shared memory of every autotuning candidate (``rows``: dicts with
    ``label``, ``D``, ``smem``, ``kept``) per head dim, against the budget; pruned ones hatched."""
    dims = sorted({r["D"] for r in rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.6), sharey=True)
    for ax, D in zip(np.atleast_1d(axes), dims):
        mine = [r for r in rows if r["D"] == D]
        for t, r in enumerate(mine):
            ax.bar(t, r["smem"] / 1024, color="#2b6cb0" if r["kept"] else "#d9d9d9",
                   hatch=None if r["kept"] else "//", edgecolor="#333333")
        ax.axhline(budget / 1024, color="#d62728", ls="--", lw=1)
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels([r["label"] for r in mine], rotation=60, fontsize=7)
        ax.set_title(f"padded head dim {D}", fontsize=10)
    np.atleast_1d(axes)[0].set_ylabel("shared memory (KB, estimate)")
    fig.suptitle("forward autotuning candidates (BLOCK_N, warps, stages, split): blue = tried, "
                 "grey = pruned; red = budget", fontsize=10)
    fig.tight_layout()
    return fig


def plot_thresholds(r: torch.Tensor, theta: torch.Tensor, e: torch.Tensor, w: int):
    """The row-mode mask builder for one head: ranks ``r_j`` (dots, 0 = best) against position,
    the threshold ``theta_p`` (the w-th best rank so far; a staircase that never rises), and for
    every admitted key its lifetime ``[j, e_j)`` (horizontal bars at height ``r_j``): key j
    leaves at the first p with ``theta_p < r_j``."""
    K = r.shape[-1]
    r, theta, e = r.cpu().numpy(), theta.cpu().numpy(), e.cpu().numpy()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    shown = np.where(theta >= K, np.nan, theta)
    ax.step(np.arange(K), shown, where="post", color="#d62728", label="theta_p (w-th best rank)")
    for j in range(K):
        if e[j] > j:
            ax.plot([j, e[j]], [r[j], r[j]], color="#2b6cb0", lw=1.5, alpha=0.7)
    ax.plot(np.arange(K), r, "o", ms=3, color="#1a365d", label="rank r_j of key j")
    ax.set_xlabel("position p (key j)")
    ax.set_ylabel("rank (0 = best score)")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"w = {w}: key j is kept on [j, e_j) (blue bars) while r_j <= theta_p", fontsize=10)
    fig.tight_layout()
    return fig
