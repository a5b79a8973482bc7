"""Figures of decoding with a bounded DMA cache: key lifetimes as a timeline, and the KV memory
and bytes read per step of a full cache against the bounded one."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from ..lifetimes import key_lifetimes


def plot_lifetimes_timeline(s: torch.Tensor, window: int, ax=None):
    """One head's keys as a timeline: key j (a row) is kept by the positions ``j <= p < e_j``
    (a bar), then evicted for good (a cross at ``e_j``; none if it survives to the end).
    s ``[K]`` float scores. Returns the figure."""
    K = s.shape[-1]
    e = key_lifetimes(s.reshape(1, 1, K), window)[0, 0].tolist()
    fig = ax.figure if ax is not None else plt.figure(figsize=(7, 0.22 * K + 1.2))
    ax = ax or fig.add_subplot(1, 1, 1)
    for j, end in enumerate(e):
        if end > j:
            ax.barh(j, end - j, left=j - 0.5, height=0.7, color="tab:blue")
        if end < K:
            ax.plot(end, j, "x", color="tab:red")
    ax.set_xlim(-0.5, K - 0.5)
    ax.set_ylim(K - 0.5, -0.5)
    ax.set_xlabel("query position p (time)")
    ax.set_ylabel("key j")
    ax.set_title(f"who keeps key j: one interval j <= p < e_j (w = {window}); x = evicted")
    return fig


def plot_kv_memory(contexts, window: int, bytes_per_key: int, measured=None):
    """Two panels against context length: KV bytes held, and K/V bytes read per decoded token,
    for a full cache (every key) and DMA's bounded one (w keys). ``measured``: optional rows
    ``{"attn", "context", "held_bytes"}`` drawn as points. Returns the figure."""
    contexts = list(contexts)
    full = [n * bytes_per_key for n in contexts]
    bounded = [min(n, window) * bytes_per_key for n in contexts]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, title in zip(axes, ("KV memory held", "K/V bytes read per decoded token")):
        ax.loglog(contexts, full, label="full cache (MHA)", color="tab:orange")
        ax.loglog(contexts, bounded, label=f"bounded DMA cache (w = {window})", color="tab:blue")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("bytes")
        ax.set_title(title)
    for row in measured or []:
        color = "tab:blue" if row["attn"] == "dma" else "tab:orange"
        axes[0].plot(row["context"], row["held_bytes"], "o", color=color)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
