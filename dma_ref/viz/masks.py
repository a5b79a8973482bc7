"""Pictures of DMA masks, and the interactive mask explorer (notebooks 00 and 02).

Pure functions compute what is drawn (``overview_masks``, ``explorer_data``); ``plot_*``
functions turn that into a matplotlib figure; ``mask_explorer_widget`` is a thin ipywidgets
factory returning ``(widget, state)`` so that tests can set every control and read the result.

Conventions of every heatmap: rows are query positions ``p`` (top = first token), columns are
keys ``j``; a dark cell means "query p keeps key j".
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from ..dense import causal_mask
from ..lifetimes import key_lifetimes
from ..mask import dma_mask, sliding_window_mask
from ..scores import dma_scores

KEEP_CMAP = "Blues"


# ----------------------------------------------------------------------------------------------
# Pure data
# ----------------------------------------------------------------------------------------------

def overview_masks(s: torch.Tensor, window: int) -> dict[str, torch.Tensor]:
    """The three masks of "DMA in one picture", each bool ``[N, N]``, for scores ``s [N]``.

    ``dense causal`` keeps every past key, ``sliding window`` the ``window`` most recent ones,
    ``DMA (row mode)`` the ``window`` best-scored past keys (``dma_mask``, causal row mode).
    """
    if s.dim() != 1:
        raise ValueError(f"s must be one head's scores of shape [N]; got {tuple(s.shape)}")
    N = s.shape[0]
    return {
        "dense causal": causal_mask(N, N),
        "sliding window": sliding_window_mask(N, window),
        "DMA (row mode)": dma_mask(s[None, None], window)[0, 0],
    }


def kept_per_row(mask: torch.Tensor) -> torch.Tensor:
    """int64 ``[Q]``: how many keys each query row keeps, for a bool mask ``[Q, K]``."""
    return mask.sum(-1)


def explorer_data(seed: int = 0, N: int = 32, window: int = 6, A_scale: float = 1.0,
                  head: int = 0, mode: str = "row", causal: bool = True, *, Hkv: int = 2,
                  D: int = 8, score_dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    """Everything the mask explorer draws, for one random DMA layer input.

    Values ``v ~ N(0, 1)`` of shape ``[1, Hkv, N, D]`` and ``Delta ~ N(0, 1/(Hkv*D))`` come from
    ``seed``; ``A = A_scale`` for every head. Scores are ``dma_scores(v, Delta, A)`` (exp form)
    computed in ``score_dtype``: in bf16 a small ``A_scale`` squeezes the scores onto a few
    representable values, ties appear and the tie rule (later key wins) turns the DMA mask into
    a sliding window; ``A_scale = 0`` makes every score exactly 1.

    Returns a dict with
      ``mask`` bool ``[N, N]`` (this ``mode``/``causal``, the chosen ``head``),
      ``row_mask`` bool ``[N, N]`` (causal row mode, for comparison),
      ``scores`` float32 ``[N]``, ``kept_per_row`` int64 ``[N]``,
      ``lifetimes`` int64 ``[N]`` (``e_j`` of causal row mode; ``None`` for other settings),
      ``rows_differ`` bool ``[N]`` (rows where ``mask`` differs from ``row_mask``),
      ``n_distinct_scores`` and the arguments.
    """
    if not 0 <= head < Hkv:
        raise ValueError(f"head must be in [0, Hkv={Hkv}), got {head}")
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(1, Hkv, N, D, generator=g)
    delta = torch.randn(Hkv * D, Hkv, generator=g) * (Hkv * D) ** -0.5
    A = torch.full((Hkv,), float(A_scale))
    s = dma_scores(v.to(score_dtype), delta.to(score_dtype), A.to(score_dtype))   # [1, Hkv, N]
    s_head = s[:, head:head + 1]                                                   # [1, 1, N]
    mask = dma_mask(s_head, window, causal=causal, mode=mode)[0, 0]
    row_mask = dma_mask(s_head, window, causal=True, mode="row")[0, 0]
    row_causal = mode == "row" and causal
    lifetimes = key_lifetimes(s_head, window)[0, 0] if row_causal else None
    scores = s_head[0, 0].float()
    return {
        "seed": int(seed), "N": N, "window": window, "A_scale": float(A_scale), "head": head,
        "mode": mode, "causal": causal, "mask": mask, "row_mask": row_mask, "scores": scores,
        "kept_per_row": kept_per_row(mask), "lifetimes": lifetimes,
        "rows_differ": (mask != row_mask).any(-1),
        "n_distinct_scores": int(torch.unique(scores).numel()),
    }


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------

def draw_mask(ax, mask: torch.Tensor, title: str | None = None) -> None:
    """Heatmap of a bool mask ``[Q, K]`` with cell borders, rows = queries, columns = keys."""
    Q, K = mask.shape
    ax.imshow(mask.float().numpy(), cmap=KEEP_CMAP, vmin=0, vmax=1.25, aspect="auto",
              interpolation="nearest", extent=(-0.5, K - 0.5, Q - 0.5 + (K - Q), -0.5 + (K - Q)))
    ax.set_xlim(-0.5, K - 0.5)
    ax.set_ylim(K - 0.5, K - Q - 0.5)
    ax.set_xticks(np.arange(-0.5, K, 1), minor=True)
    ax.set_yticks(np.arange(K - Q - 0.5, K, 1), minor=True)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(which="minor", color="white", linewidth=0.4)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("key j")
    ax.set_ylabel("query position p")
    if title:
        ax.set_title(title, fontsize=10)


def _draw_scores(ax, s: torch.Tensor) -> None:
    """Bar chart of per-key scores ``s [K]`` aligned with the heatmap columns below it."""
    s = s.float().numpy()
    ax.bar(np.arange(len(s)), s, width=0.8, color="tab:orange")
    ax.set_xlim(-0.5, len(s) - 0.5)
    lo = min(0.0, float(s.min()))
    ax.set_ylim(lo, float(s.max()) * 1.08 if s.max() > 0 else 1.0)
    ax.set_ylabel("score $s_j$", fontsize=8)
    ax.tick_params(labelbottom=False, labelsize=7)


def plot_overview(s: torch.Tensor, window: int):
    """"DMA in one picture": dense causal vs sliding window vs DMA row mode, scores on top.

    s: float ``[N]``, one head's scores. Returns the figure.
    """
    masks = overview_masks(s, window)
    fig, axes = plt.subplots(2, 3, figsize=(12, 4.8), sharex="col",
                             gridspec_kw={"height_ratios": [1, 4], "hspace": 0.05, "wspace": 0.25})
    for col, (name, m) in enumerate(masks.items()):
        _draw_scores(axes[0, col], s)
        if name != "DMA (row mode)":
            for bar in axes[0, col].patches:
                bar.set_alpha(0.25)        # the scores are ignored by these two masks
        draw_mask(axes[1, col], m)
        axes[0, col].set_title(f"{name}  (keeps {int(m.sum())} pairs)", fontsize=10)
    fig.suptitle(f"N = {len(s)}, w = {window}: which keys each query keeps", fontsize=11, y=1.0)
    return fig


def plot_lifetimes(mask: torch.Tensor, e: torch.Tensor, s: torch.Tensor | None = None):
    """The row-mode mask ``[N, N]`` with each key's lifetime ``[j, e_j)`` drawn as a bar.

    e: int64 ``[N]`` from ``key_lifetimes``; a red cross marks the position ``e_j`` where key j
    is evicted (none when ``e_j = N``: kept to the end; none when ``e_j = j``: never admitted).
    """
    N = mask.shape[-1]
    if s is not None:
        fig, (ax_s, ax) = plt.subplots(2, 1, figsize=(6.5, 7.2), sharex=True,
                                       gridspec_kw={"height_ratios": [1, 5], "hspace": 0.05})
        _draw_scores(ax_s, s)
    else:
        fig, ax = plt.subplots(figsize=(6.5, 6))
    draw_mask(ax, mask)
    e = e.numpy()
    for j in range(N):
        if e[j] > j:                       # kept by positions j .. e_j - 1
            ax.plot([j, j], [j - 0.4, e[j] - 0.6], color="black", linewidth=2)
            if e[j] < N:
                ax.plot(j, e[j], marker="x", color="tab:red", markersize=5)
        else:
            ax.plot(j, j, marker="o", markerfacecolor="none", color="tab:gray", markersize=4)
    title = ("row mode: key j is kept from p = j to p = e_j - 1\n"
             "(x = evicted at e_j, o = never admitted)")
    (ax_s if s is not None else ax).set_title(title, fontsize=9)
    return fig


def plot_explorer(data: dict[str, Any]):
    """The explorer figure for ``explorer_data(...)``: scores bar, mask heatmap, keys kept per
    row, and (causal row mode) the lifetime bars drawn over the mask."""
    N, w = data["N"], data["window"]
    fig = plt.figure(figsize=(9, 7))
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 5], width_ratios=[5, 1.3], hspace=0.05, wspace=0.05)
    ax_s = fig.add_subplot(gs[0, 0])
    ax_m = fig.add_subplot(gs[1, 0], sharex=ax_s)
    ax_k = fig.add_subplot(gs[1, 1], sharey=ax_m)
    _draw_scores(ax_s, data["scores"])
    draw_mask(ax_m, data["mask"])
    e = data["lifetimes"]
    if e is not None:
        for j in range(N):
            if e[j] > j:
                ax_m.plot([j, j], [j - 0.4, int(e[j]) - 0.6], color="black", linewidth=1.2, alpha=0.7)
    diff = data["rows_differ"].numpy()
    for p in np.flatnonzero(diff):
        ax_m.axhspan(p - 0.5, p + 0.5, color="tab:red", alpha=0.12, linewidth=0)
    kept = data["kept_per_row"].numpy()
    ax_k.barh(np.arange(N), kept, height=0.8,
              color=np.where(diff, "tab:red", "tab:blue"))
    ax_k.axvline(w, color="black", linestyle="--", linewidth=1)
    ax_k.set_xlabel("kept keys")
    ax_k.set_xlim(0, max(w, int(kept.max())) + 1)
    ax_k.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_k.tick_params(labelleft=False)
    mode = f"{data['mode']} mode, {'causal' if data['causal'] else 'non-causal'}"
    ax_s.set_title(f"head {data['head']}, w = {w}, A = {data['A_scale']:g}, {mode}; "
                   f"{data['n_distinct_scores']} distinct scores"
                   + ("; red rows differ from row mode" if diff.any() else ""), fontsize=9)
    return fig


# ----------------------------------------------------------------------------------------------
# Widget
# ----------------------------------------------------------------------------------------------


def bind_controls(controls: dict, render, state: dict, show: bool) -> None:
    """The widget factories' shared wiring: every change of a control calls
    ``render({name: value})`` (which returns the new figure and may fill ``state``), stores the
    figure in ``state["fig"]``, counts ``state["updates"]`` and, with ``show``, draws it into
    ``state["output"]``. Renders once now."""
    from IPython.display import display

    out = state["output"]

    def update(_change=None) -> None:
        fig = render({name: c.value for name, c in controls.items()})
        plt.close(fig)                      # keep it out of pyplot's global list; shown below
        state.update(fig=fig, updates=state["updates"] + 1)
        if show:
            with out:
                out.clear_output(wait=True)
                display(fig)

    for c in controls.values():
        c.observe(update, names="value")
    update()


def mask_explorer_widget(seed: int = 0, N: int = 32, window: int = 6, A_scale: float = 1.0,
                         head: int = 0, mode: str = "row", causal: bool = True, *, Hkv: int = 2,
                         show: bool = True):
    """Interactive mask explorer: ``(widget, state)``.

    Controls (``state["controls"]``, a dict of ipywidgets): ``seed``, ``N``, ``window``,
    ``A_scale``, ``head``, ``mode``, ``causal``. Every change recomputes ``state["data"]``
    (``explorer_data``) and ``state["fig"]`` (``plot_explorer``), and counts ``state["updates"]``.
    ``show=False`` skips drawing into the output area (tests).
    """
    import ipywidgets as W

    controls = {
        "seed": W.IntSlider(value=seed, min=0, max=99, description="seed"),
        "N": W.IntSlider(value=N, min=4, max=64, description="N"),
        "window": W.IntSlider(value=window, min=1, max=64, description="window w"),
        "A_scale": W.FloatSlider(value=A_scale, min=-1.0, max=2.0, step=0.01, description="A"),
        "head": W.Dropdown(options=list(range(Hkv)), value=head, description="head"),
        "mode": W.ToggleButtons(options=["row", "global"], value=mode, description="mode"),
        "causal": W.Checkbox(value=causal, description="causal"),
    }
    out = W.Output()
    state: dict[str, Any] = {"controls": controls, "output": out, "data": None, "fig": None,
                             "updates": 0}

    def render(args: dict) -> plt.Figure:
        state["data"] = explorer_data(**args, Hkv=Hkv)
        return plot_explorer(state["data"])

    bind_controls(controls, render, state, show)
    left = W.VBox([controls[n] for n in ("window", "A_scale", "head")])
    right = W.VBox([controls[n] for n in ("mode", "causal", "N", "seed")])
    widget = W.VBox([W.HBox([left, right]), out])
    return widget, state
