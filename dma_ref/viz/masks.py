"""Pictures of DMA masks, and the interactive mask explorer (notebooks 00 and 02).

Pure functions compute what is drawn (``overview_masks``, ``explorer_data``); ``plot_*``
functions turn that into a matplotlib figure; ``mask_explorer_widget`` is a thin ipywidgets
factory returning ``(widget, state)`` so that tests can set every control and read the result.

Conventions of every heatmap: rows are query positions ``p`` (top = first token), columns are
keys ``j``; a dark cell means "query p keeps key j".
"""

from __future__ import annotations

import io
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


def parse_scores(text: str) -> torch.Tensor:
    """``"1, 2.5, 2.5, 0"`` -> float32 ``[4]`` (commas or spaces); a clear error otherwise."""
    parts = [t for t in text.replace(",", " ").split() if t]
    try:
        values = [float(t) for t in parts]
    except ValueError:
        raise ValueError(f"scores must be numbers separated by commas, got {text!r}") from None
    if not values:
        raise ValueError("scores is empty: type at least one number (e.g. 1, 3, 3, 2)")
    if not all(np.isfinite(values)):
        raise ValueError(f"scores must be finite, got {text!r}")
    return torch.tensor(values, dtype=torch.float32)


def row_threshold(s: torch.Tensor, mask: torch.Tensor, p: int) -> tuple[int | None, float | None]:
    """``(j, s_j)`` of the lowest-ranked key that query row ``p`` keeps (rank by ``(s_j, j)``:
    higher score first, the later key first on a tie): the row's threshold ``tau_p``. Every
    kept key ranks at or above it; a key with the same score but an earlier position is out.
    ``(None, None)`` when the row keeps nothing. s float ``[K]``, mask bool ``[Q, K]``."""
    kept = mask[p].nonzero().flatten().tolist()
    if not kept:
        return None, None
    j = min(kept, key=lambda i: (float(s[i]), i))
    return j, float(s[j])


def explorer_data(seed: int = 0, N: int = 32, window: int = 6, A_scale: float = 1.0,
                  head: int = 0, mode: str = "row", causal: bool = True, *, Hkv: int = 2,
                  D: int = 8, score_dtype: torch.dtype = torch.bfloat16,
                  scores: str | torch.Tensor | None = None, row: int | None = None,
                  compare: str = "row") -> dict[str, Any]:
    """Everything the mask explorer draws, for one random DMA layer input, or for scores you set.

    Values ``v ~ N(0, 1)`` of shape ``[1, Hkv, N, D]`` and ``Delta ~ N(0, 1/(Hkv*D))`` come from
    ``seed``; ``A = A_scale`` for every head. Scores are ``dma_scores(v, Delta, A)`` (exp form)
    computed in ``score_dtype``: in bf16 a small ``A_scale`` squeezes the scores onto a few
    representable values, ties appear and the tie rule (later key wins) turns the DMA mask into
    a sliding window; ``A_scale = 0`` makes every score exactly 1.

    ``scores``: your own scores instead (a float tensor ``[N]`` or text like ``"1, 3, 3, 2"``;
    empty text means random); then N is their length and seed, A_scale, head are not used.
    ``row``: the query row p whose threshold is reported (default: the last row).
    ``compare``: the mask drawn beside DMA's, ``"row"`` (causal row mode) or ``"swa"`` (a sliding
    window of the same w); ``rows_differ`` marks the rows where the two differ.

    Returns a dict with
      ``mask`` bool ``[N, N]`` (this ``mode``/``causal``, the chosen ``head``),
      ``row_mask`` bool ``[N, N]`` (causal row mode), ``ref_mask`` bool ``[N, N]`` and
      ``ref_name`` (what ``compare`` chose), ``rows_differ`` bool ``[N]``,
      ``scores`` float32 ``[N]``, ``kept_per_row`` int64 ``[N]``,
      ``lifetimes`` int64 ``[N]`` (``e_j`` of causal row mode; ``None`` for other settings),
      ``row``, ``threshold_key`` and ``threshold`` (``row_threshold`` of that row),
      ``n_distinct_scores`` and the arguments.
    """
    if compare not in ("row", "swa"):
        raise ValueError(f"compare must be 'row' or 'swa', got {compare!r}")
    if isinstance(scores, str):
        scores = parse_scores(scores) if scores.strip() else None
    if scores is not None:
        if scores.dim() != 1:
            raise ValueError(f"scores must have shape [N], got {tuple(scores.shape)}")
        s_head = scores.float()[None, None]                                         # [1, 1, N]
        N = s_head.shape[-1]
    else:
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
    ref_mask = row_mask if compare == "row" else sliding_window_mask(N, window)
    row_causal = mode == "row" and causal
    lifetimes = key_lifetimes(s_head, window)[0, 0] if row_causal else None
    scores_out = s_head[0, 0].float()
    p = N - 1 if row is None else min(max(int(row), 0), N - 1)
    tau_key, tau = row_threshold(scores_out, mask, p)
    return {
        "seed": int(seed), "N": N, "window": window, "A_scale": float(A_scale), "head": head,
        "mode": mode, "causal": causal, "mask": mask, "row_mask": row_mask, "scores": scores_out,
        "ref_mask": ref_mask, "ref_name": "row mode" if compare == "row" else "sliding window",
        "custom_scores": scores is not None, "kept_per_row": kept_per_row(mask),
        "lifetimes": lifetimes, "rows_differ": (mask != ref_mask).any(-1),
        "row": p, "threshold_key": tau_key, "threshold": tau,
        "n_distinct_scores": int(torch.unique(scores_out).numel()),
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
    """The explorer figure for ``explorer_data(...)``: scores on top (the chosen row's kept keys
    dark, its threshold tau_p dashed), DMA's mask with the lifetime bars (causal row mode) and
    the chosen row outlined, the compared mask beside it, keys kept per row; rows where the two
    masks differ are red."""
    N, w, p = data["N"], data["window"], data["row"]
    fig = plt.figure(figsize=(12, 6.4))
    gs = fig.add_gridspec(2, 3, height_ratios=[1, 4.5], width_ratios=[5, 5, 1.2], hspace=0.06,
                          wspace=0.12)
    ax_s = fig.add_subplot(gs[0, 0])
    ax_m = fig.add_subplot(gs[1, 0], sharex=ax_s)
    ax_r = fig.add_subplot(gs[1, 1], sharey=ax_m)
    ax_k = fig.add_subplot(gs[1, 2], sharey=ax_m)
    _draw_scores(ax_s, data["scores"])
    kept_p = data["mask"][p].numpy()
    for j, bar in enumerate(ax_s.patches):
        bar.set_alpha(1.0 if kept_p[j] else 0.3)
    if data["threshold"] is not None:
        ax_s.axhline(data["threshold"], color="black", linestyle="--", linewidth=1)
        ax_s.text(N - 0.5, data["threshold"], f" $\\tau_{{{p}}}$", va="center", fontsize=9)
    draw_mask(ax_m, data["mask"])
    draw_mask(ax_r, data["ref_mask"])
    ax_r.set_ylabel("")
    ax_r.tick_params(labelleft=False)
    e = data["lifetimes"]
    if e is not None:
        for j in range(N):
            if e[j] > j:
                ax_m.plot([j, j], [j - 0.4, int(e[j]) - 0.6], color="black", linewidth=1.2, alpha=0.7)
    diff = data["rows_differ"].numpy()
    for ax in (ax_m, ax_r):
        for q in np.flatnonzero(diff):
            ax.axhspan(q - 0.5, q + 0.5, color="tab:red", alpha=0.12, linewidth=0)
        ax.add_patch(plt.Rectangle((-0.5, p - 0.5), N, 1, fill=False, edgecolor="tab:orange",
                                   linewidth=2))
    kept = data["kept_per_row"].numpy()
    ax_k.barh(np.arange(N), kept, height=0.8, color=np.where(diff, "tab:red", "tab:blue"))
    ax_k.axvline(w, color="black", linestyle="--", linewidth=1)
    ax_k.set_xlabel("kept keys")
    ax_k.set_xlim(0, max(w, int(kept.max())) + 1)
    ax_k.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_k.tick_params(labelleft=False)
    mode = f"{data['mode']} mode, {'causal' if data['causal'] else 'non-causal'}"
    source = "your scores" if data["custom_scores"] else f"head {data['head']}, A = {data['A_scale']:g}"
    ax_s.set_title(f"DMA: {source}, w = {w}, {mode}; {data['n_distinct_scores']} distinct scores;"
                   f" row p = {p} outlined", fontsize=9)
    ax_r.set_title(f"{data['ref_name']}, w = {w}"
                   + (f"; {int(diff.sum())} red rows differ" if diff.any() else "; same mask"),
                   fontsize=9)
    return fig


# ----------------------------------------------------------------------------------------------
# Widget
# ----------------------------------------------------------------------------------------------


def figure_png(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes (tight bounding box, the figure's own dpi)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def bind_controls(controls: dict, render, state: dict, show: bool) -> None:
    """The widget factories' shared wiring: every change of a control calls
    ``render({name: value})`` (which returns the new figure and may fill ``state``), stores the
    figure in ``state["fig"]``, counts ``state["updates"]`` and, with ``show``, puts its PNG into
    ``state["output"]`` (an ``ipywidgets.Image``). Renders once now.

    An Image widget rather than an Output widget: while a notebook executes under nbclient (voila,
    nbconvert), output captured by an Output widget makes nbclient send a comm message on the
    shell channel while it awaits the cell's reply there, and voila then sometimes never sees the
    reply: the page hangs at the widget cell.
    """
    out = state["output"]

    def update(_change=None) -> None:
        fig = render({name: c.value for name, c in controls.items()})
        plt.close(fig)                      # keep it out of pyplot's global list
        state.update(fig=fig, updates=state["updates"] + 1)
        if show:
            out.value = figure_png(fig)

    for c in controls.values():
        c.observe(update, names="value")
    update()


def mask_explorer_widget(seed: int = 0, N: int = 32, window: int = 6, A_scale: float = 1.0,
                         head: int = 0, mode: str = "row", causal: bool = True, *, Hkv: int = 2,
                         show: bool = True):
    """Interactive mask explorer: ``(widget, state)``.

    Controls (``state["controls"]``, a dict of ipywidgets): ``seed``, ``N``, ``window``,
    ``A_scale``, ``head``, ``mode``, ``causal``, ``row`` (the query row whose threshold tau_p
    is drawn), ``compare`` (row mode or a sliding window beside DMA) and ``scores`` (type your
    own; unreadable text is reported in ``state["error"]`` and on the figure, and random scores
    are drawn meanwhile). Sliders redraw when released. Every change recomputes
    ``state["data"]`` (``explorer_data``) and ``state["fig"]`` (``plot_explorer``), and counts
    ``state["updates"]``.
    ``show=False`` skips drawing into the image (tests).
    """
    import ipywidgets as W

    slider = {"continuous_update": False}            # redraw when the handle is released
    controls = {
        "seed": W.IntSlider(value=seed, min=0, max=99, description="seed", **slider),
        "N": W.IntSlider(value=N, min=4, max=64, description="N", **slider),
        "window": W.IntSlider(value=window, min=1, max=64, description="window w", **slider),
        "A_scale": W.FloatSlider(value=A_scale, min=-1.0, max=2.0, step=0.01, description="A",
                                 **slider),
        "head": W.Dropdown(options=list(range(Hkv)), value=head, description="head"),
        "mode": W.ToggleButtons(options=["row", "global"], value=mode, description="mode"),
        "causal": W.Checkbox(value=causal, description="causal"),
        "row": W.IntSlider(value=N - 1, min=0, max=63, description="row p", **slider),
        "compare": W.ToggleButtons(options=[("row mode", "row"), ("sliding window", "swa")],
                                   value="row", description="beside"),
        "scores": W.Text(value="", placeholder="your scores, e.g. 1, 3, 3, 2 (empty: random)",
                         description="scores", continuous_update=False,
                         layout=W.Layout(width="520px")),
    }
    out = W.Image(format="png")
    state: dict[str, Any] = {"controls": controls, "output": out, "data": None, "fig": None,
                             "updates": 0}

    def render(args: dict) -> plt.Figure:
        try:
            state["data"] = explorer_data(**args, Hkv=Hkv)
            state["error"] = None
        except ValueError as err:               # unreadable typed scores: say so, keep the rest
            state["error"] = str(err)
            state["data"] = explorer_data(**{**args, "scores": None}, Hkv=Hkv)
        fig = plot_explorer(state["data"])
        if state["error"]:
            fig.text(0.01, 0.99, state["error"], color="tab:red", va="top", fontsize=9)
        return fig

    state["error"] = None
    bind_controls(controls, render, state, show)
    left = W.VBox([controls[n] for n in ("window", "A_scale", "head", "row")])
    right = W.VBox([controls[n] for n in ("mode", "causal", "N", "seed", "compare")])
    widget = W.VBox([W.HBox([left, right]), controls["scores"], out])
    return widget, state
