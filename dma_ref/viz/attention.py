"""Figures for dense attention and naive DMA (notebooks 01 and 03)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..dense import causal_mask
from .masks import draw_mask


def top_left_causal_mask(Q: int, K: int) -> torch.Tensor:
    """bool ``[Q, K]``: the *wrong* alignment for ``Q < K``, keep ``j <= i`` (row i at position i)."""
    return torch.arange(K)[None, :] <= torch.arange(Q)[:, None]


def plot_causal_alignment(Q: int, K: int):
    """Side by side: top-left (``j <= i``) vs bottom-right (``j <= K - Q + i``) causal masks.

    Rows are labelled by the absolute position of each query, ``p_i = K - Q + i``: the last Q
    tokens of a length-K sequence (chunked prefill, or decoding with a KV cache).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2 + 0.15 * Q))
    draw_mask(axes[0], top_left_causal_mask(Q, K),
               f"top-left: row i keeps j <= i  (wrong for Q={Q} < K={K})")
    draw_mask(axes[1], causal_mask(Q, K),
               "bottom-right: row i keeps j <= K - Q + i  (right)")
    for ax in axes:
        ax.set_ylabel("query position p_i = K - Q + i")
    return fig


def plot_memory_scaling(N: Sequence[int], measured: dict[str, Sequence[float]],
                        fit: tuple[float, float, float] | None = None, fit_key: str | None = None):
    """Measured bytes vs N (log-log), one line per entry of ``measured``, plus ``a·N² + b·N + c``.

    measured: ``{label: bytes per N}``. fit: coefficients from ``dma_ref.memory.quadratic_fit``
    of the series ``fit_key``; drawn dashed over a fine grid of N.
    """
    N = np.asarray(N, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, y in measured.items():
        ax.plot(N, np.asarray(y, dtype=float) / 2**20, marker="o", label=label)
    if fit is not None:
        a, b, c = fit
        grid = np.geomspace(N.min(), N.max(), 50)
        ax.plot(grid, (a * grid**2 + b * grid + c) / 2**20, "k--", linewidth=1,
                label=f"fit to {fit_key}: {a:.1f}·N² + {b:.0f}·N")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("MiB")
    ax.set_title("naive DMA materialises Q×K tensors: memory grows like N²", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
