"""What a trained DMA model keeps: the learned-mask explorer and per-head statistics (notebooks
09 and 10), plus the training-comparison figure.

Pure functions compute what is drawn (``layer_view``, ``query_view``, ``head_statistics``);
``plot_*`` functions draw it; ``learned_mask_widget`` is a thin ipywidgets factory returning
``(widget, state)`` so that tests can set every control and read the result.

Colours follow the token roles of ``dma_ref.lab.tasks``: pair keys and values (the tokens a query
must find), queries, fillers.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..dense import expand_kv
from ..lab.tasks import ROLE_FILLER, ROLE_KEY, ROLE_NAMES, ROLE_QUERY, ROLE_VALUE, TaskBatch
from ..nn import kinds
from .masks import bind_controls, draw_mask

ROLE_COLORS = {ROLE_KEY: "tab:blue", ROLE_VALUE: "tab:green", ROLE_QUERY: "tab:red",
               ROLE_FILLER: "lightgray"}
KINDS = ("local", "global", "range")


# ----------------------------------------------------------------------------------------------
# Pure data
# ----------------------------------------------------------------------------------------------

def layer_view(layer: dict, attn: str, head: int, window: int, sample: int = 0) -> dict[str, torch.Tensor]:
    """One query head of one layer of ``model.attention_maps``, with the mask recomputed for
    window w (the trained window, or any other to ask "what if").

    Returns float32/bool/int64 tensors for that sample and head: ``scores [N]`` (of the KV head
    the query head reads), ``mask [N, N]``, ``probs [N, N]`` (softmax over kept keys of
    ``q k / sqrt(D) + s``), ``lifetimes [N]`` (``e_j``: kept by positions ``j <= p < e_j``).
    """
    q, k, s = layer["q"], layer["k"], layer["s"]
    Hq, Hkv = q.shape[1], k.shape[1]
    if not 0 <= head < Hq:
        raise ValueError(f"head must be in [0, {Hq}), got {head}")
    g = head // (Hq // Hkv)                                          # KV head of this query head
    s_h = s[sample:sample + 1, g:g + 1].float().cpu()                # [1, 1, N]
    q_h = q[sample:sample + 1, head:head + 1].float().cpu()          # [1, 1, N, D]
    k_h = k[sample:sample + 1, g:g + 1].float().cpu()
    return {"scores": s_h[0, 0], "mask": kinds.kept(attn, s_h, window)[0, 0],
            "probs": kinds.probs(attn, q_h, k_h, s_h, window)[0, 0],
            "lifetimes": kinds.lifetimes(attn, s_h, window)[0, 0]}


def query_view(view: dict[str, torch.Tensor], roles: torch.Tensor, query: int) -> dict[str, Any]:
    """The row of query position ``query``: ``kept`` bool ``[N]``, ``attention`` float ``[N]``,
    and how the kept keys split by role (``kept_by_role``: role name -> count) plus the
    attention mass on pair tokens (``pair_attention``). roles: int8 ``[N]``."""
    N = view["mask"].shape[0]
    if not 0 <= query < N:
        raise ValueError(f"query must be in [0, {N}), got {query}")
    kept = view["mask"][query]
    attn = view["probs"][query]
    roles = roles.cpu()
    return {"query": query, "kept": kept, "attention": attn,
            "kept_by_role": {name: int((kept & (roles == r)).sum()) for r, name in enumerate(ROLE_NAMES)},
            "pair_attention": float(attn[roles <= ROLE_VALUE].sum())}


def head_statistics(maps: dict, roles: torch.Tensor, attn: str, window: int) -> list[dict]:
    """Per (layer, query head) statistics over every sample. The mask statistics use rows
    ``p >= w`` only (earlier rows keep every past key whatever the attention, so they say
    nothing); ``kept_pairs`` and ``attn_pairs`` use every query row:

    * ``kept_local``: fraction of kept (p, j) with ``p - j < w`` — 1 for a sliding window;
    * ``kept_persistent``: among kept (p, j) with ``j < N - w``, the fraction whose key is never
      evicted (``e_j = N``) — the head keeps one fixed set of keys for the whole sequence (the
      last w keys are left out: they survive to the end trivially, the sequence just stops);
    * ``kept_pairs``: at query rows, fraction of kept keys that are pair tokens (keys or values);
    * ``attn_pairs``: at query rows, attention mass on pair tokens;
    * ``mean_distance``: attention-weighted mean of ``p - j`` over rows ``p >= w``, in positions;
    * ``kind``: "local" if ``kept_local >= 0.6``, else "global" if ``kept_persistent >= 0.6``,
      else "range" (keys kept for a while, then evicted: neither recent nor fixed).

    roles: int8 ``[B, N]``. Returns a list of dicts with ``layer``, ``head`` and the above.
    """
    roles = roles.cpu()
    B, N = roles.shape
    p = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    late = (p >= window).expand(N, N)
    n_rows = max(1, B * (N - window))                                 # rows p >= w, all samples
    stats = []
    for li, layer in enumerate(maps["layers"]):
        Hq = layer["q"].shape[1]
        s = layer["s"].float().cpu()
        mask = expand_kv(kinds.kept(attn, s, window), Hq)           # [B, Hq, N, N]
        probs = layer["probs"].float().cpu() if window_mask_matches(layer, attn, window) else None
        if probs is None:                                             # recompute for this window
            probs = torch.stack([torch.stack([layer_view(layer, attn, h, window, b)["probs"]
                                              for h in range(Hq)]) for b in range(B)])
        e = expand_kv(kinds.lifetimes(attn, s, window), Hq)           # [B, Hq, N]
        is_query = (roles == ROLE_QUERY)[:, None, :, None]            # [B, 1, N, 1] rows
        is_pair = (roles <= ROLE_VALUE)[:, None, None, :]             # [B, 1, 1, N] columns
        for h in range(Hq):
            m = mask[:, h] & late                                     # [B, N, N]
            pr = probs[:, h]
            n_kept = m.sum().clamp(min=1)
            persistent = (e[:, h] == N)[:, None, :]
            early = m & (j < N - window)                              # keys that could be evicted
            qm = m & is_query[:, 0]
            stats.append({
                "layer": li, "head": h,
                "kept_local": float((m & (p - j < window)).sum() / n_kept),
                "kept_persistent": float((early & persistent).sum() / early.sum().clamp(min=1)),
                "kept_pairs": float((qm & is_pair[:, 0]).sum() / qm.sum().clamp(min=1)),
                "attn_pairs": float((pr * is_pair[:, 0] * is_query[:, 0]).sum() / is_query.sum().clamp(min=1)),
                "mean_distance": float((pr * (p - j).clamp(min=0) * late).sum() / n_rows),
            })
    for st in stats:
        st["kind"] = ("local" if st["kept_local"] >= 0.6 else
                      "global" if st["kept_persistent"] >= 0.6 else "range")
    return stats


def window_mask_matches(layer: dict, attn: str, window: int) -> bool:
    """True when ``layer["probs"]`` was computed with this window (the model's own mask)."""
    mask = layer["mask"]
    return bool(torch.equal(mask.cpu(), kinds.kept(attn, layer["s"].float().cpu(), window)))


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------

def _role_colors(roles: torch.Tensor) -> list[str]:
    return [ROLE_COLORS[int(r)] for r in roles]


def _role_legend(ax) -> None:
    handles = [plt.Rectangle((0, 0), 1, 1, color=ROLE_COLORS[r]) for r in range(4)]
    ax.legend(handles, ["pair key", "pair value", "query", "filler"], fontsize=7, ncol=4,
              loc="upper right", frameon=False)


def plot_task_sample(batch: TaskBatch, index: int = 0, window: int | None = None):
    """One sequence as a strip of tokens coloured by role, with the targets under the queries.

    window: if given, shade the w positions that a sliding window lets the first query see.
    """
    x, y, r = batch.inputs[index].cpu(), batch.targets[index].cpu(), batch.roles[index].cpu()
    N = len(x)
    fig, ax = plt.subplots(figsize=(min(16, 0.18 * N + 2), 1.9))
    ax.bar(np.arange(N), np.ones(N), width=0.9, color=_role_colors(r))
    for i in range(N):
        ax.text(i, 0.5, str(int(x[i])), ha="center", va="center", fontsize=5.5, rotation=90)
        if y[i] >= 0:
            ax.text(i, -0.35, str(int(y[i])), ha="center", va="center", fontsize=5.5,
                    rotation=90, color="tab:red")
    if window is not None:
        first_q = int((r == ROLE_QUERY).nonzero()[0])
        ax.axvspan(first_q - window + 0.5, first_q + 0.5, color="black", alpha=0.12)
        ax.text(first_q - window / 2, 1.15, f"sliding window w={window}", ha="center", fontsize=7)
    ax.set_xlim(-0.6, N - 0.4)
    ax.set_ylim(-0.7, 1.35)
    ax.set_yticks([0.5, -0.35], ["input", "target"], fontsize=7)
    ax.set_xlabel("position")
    _role_legend(ax)
    return fig


def plot_query_view(view: dict, row: dict, roles: torch.Tensor, *, title: str = ""):
    """Explorer figure: the score of every key (bars coloured by role, kept keys outlined), the
    attention row of the chosen query, and the head's whole mask with the lifetimes ``[j, e_j)``
    as black lines and the chosen row marked in red."""
    N = len(roles)
    cols = _role_colors(roles)
    kept = row["kept"].numpy()
    fig = plt.figure(figsize=(9, 8))
    gs = fig.add_gridspec(3, 1, height_ratios=[1.1, 1.1, 5], hspace=0.08)
    ax_s = fig.add_subplot(gs[0])
    ax_a = fig.add_subplot(gs[1], sharex=ax_s)
    ax_m = fig.add_subplot(gs[2], sharex=ax_s)
    s = view["scores"].numpy()
    ax_s.bar(np.arange(N), s, width=0.8, color=cols, edgecolor=np.where(kept, "black", "none"),
             linewidth=1.0)
    ax_s.set_ylabel("score $s_j$", fontsize=8)
    ax_s.set_ylim(min(0.0, float(s.min())), float(s.max()) * 1.1 + 1e-6)
    ax_s.tick_params(labelbottom=False, labelsize=7)
    _role_legend(ax_s)
    ax_a.bar(np.arange(N), row["attention"].numpy(), width=0.8, color=cols)
    ax_a.axvline(row["query"], color="tab:red", linewidth=1, linestyle=":")
    ax_a.set_ylabel(f"attention\nrow p={row['query']}", fontsize=8)
    ax_a.set_ylim(0, 1.02)
    ax_a.tick_params(labelbottom=False, labelsize=7)
    draw_mask(ax_m, view["mask"])
    e = view["lifetimes"].numpy()
    for j in range(N):
        if e[j] > j:
            ax_m.plot([j, j], [j - 0.4, e[j] - 0.6], color="black", linewidth=0.9, alpha=0.6)
    ax_m.axhspan(row["query"] - 0.5, row["query"] + 0.5, color="tab:red", alpha=0.25, linewidth=0)
    for jj in range(N):                                   # role strip under the columns
        ax_m.add_patch(plt.Rectangle((jj - 0.5, N - 0.5), 1, 0.9, color=cols[jj], clip_on=False))
    kb = row["kept_by_role"]
    ax_s.set_title(f"{title}query p={row['query']} keeps {int(kept.sum())} keys: {kb['key']} pair keys, "
                   f"{kb['value']} pair values, {kb['query']} queries, {kb['filler']} fillers; "
                   f"attention on pairs {row['pair_attention']:.2f}", fontsize=9)
    return fig


def plot_head_statistics(stats: list[dict]):
    """Heads as points: x = fraction of kept keys that are recent (``kept_local``), y = fraction
    that are never evicted (``kept_persistent``), colour = kind; right: attention mass on pair
    tokens at the queries, per head."""
    colors = {"local": "tab:orange", "global": "tab:purple", "range": "tab:cyan"}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 1.4]})
    # Labels go round the point in turn, so that heads at nearby points stay readable.
    offsets = [(5, 5), (5, -11), (-30, 5), (-30, -11)]
    for i, st in enumerate(stats):
        ax.scatter(st["kept_local"], st["kept_persistent"], color=colors[st["kind"]], s=60)
        ax.annotate(f"L{st['layer']}H{st['head']}", (st["kept_local"], st["kept_persistent"]),
                    fontsize=7, xytext=offsets[i % len(offsets)], textcoords="offset points")
    ax.axvline(0.6, color="gray", linestyle=":", linewidth=1)
    ax.axhline(0.6, color="gray", linestyle=":", linewidth=1)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("kept keys that are recent (p - j < w)")
    ax.set_ylabel("kept keys never evicted (e_j = N)")
    for kind, c in colors.items():
        if any(st["kind"] == kind for st in stats):          # no legend entry without points
            ax.scatter([], [], color=c, label=kind)
    ax.legend(fontsize=8, loc="center right")
    labels = [f"L{st['layer']}H{st['head']}" for st in stats]
    ax2.bar(labels, [st["attn_pairs"] for st in stats], color=[colors[st["kind"]] for st in stats])
    ax2.set_ylabel("attention on pair tokens\n(at query positions)")
    ax2.set_ylim(0, 1)
    ax2.tick_params(axis="x", labelsize=7, rotation=45)
    fig.tight_layout()
    return fig


def plot_comparison(accuracy: dict[str, float], curves: dict[str, list], config: dict | None = None):
    """Held-out accuracy at query positions: curves over training steps (left), final values
    (right), one colour per attention."""
    colors = {"mha": "tab:gray", "swa": "tab:orange", "dma": "tab:blue"}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    for name, curve in curves.items():
        c = np.asarray(curve, dtype=float)
        ax.plot(c[:, 0], c[:, 1], marker=".", label=name, color=colors.get(name))
    if config and config.get("window_anneal"):
        h, a = config.get("window_hold", 0), config["window_anneal"]
        ax.axvspan(h, h + a, color="black", alpha=0.07, linewidth=0)
        ax.text(h + a / 2, 0.03, f"w: {config.get('seq_len')} -> {config.get('window')}", ha="center", fontsize=8)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out accuracy (queries)")
    ax.set_ylim(0, 1.02)
    ax.legend()
    names = list(accuracy)
    bars = ax2.bar(names, [accuracy[n] for n in names], color=[colors.get(n) for n in names])
    for b, n in zip(bars, names):
        ax2.text(b.get_x() + b.get_width() / 2, accuracy[n] + 0.02, f"{accuracy[n]:.2f}", ha="center")
    ax2.set_ylim(0, 1.1)
    ax2.set_title("final accuracy")
    if config:
        ax.set_title(f"MQAR: N={config.get('seq_len')}, {config.get('pairs')} pairs, queries from "
                     f"p={config.get('query_start')}, w={config.get('window')}, "
                     f"{config.get('n_layers')} layers", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Widget
# ----------------------------------------------------------------------------------------------

def learned_mask_widget(model, batch: TaskBatch, *, layer: int | None = None, head: int = 0,
                        query: int = 0, window: int | None = None, sample: int = 0,
                        show: bool = True):
    """Interactive learned-mask explorer: ``(widget, state)``.

    Controls (``state["controls"]``): ``sample``, ``layer``, ``head``, ``query`` (the i-th query
    of the sample: the slider moves from query to query), ``window`` (w: the model is RUN again
    with every layer at this window, so later layers see what the changed masks let through; the
    model was trained with ``model.cfg.window``). Sliders redraw when released. Every change
    recomputes ``state["view"]`` (``layer_view``), ``state["row"]`` (``query_view``),
    ``state["answer"]`` (position, key, target, prediction, right: the model's answer at that
    query with that window), ``state["accuracy"]`` (held-out accuracy of ``batch`` at that
    window) and ``state["fig"]``, and counts ``state["updates"]``. ``show=False`` skips drawing
    into the image (tests).
    """
    import ipywidgets as W

    from ..lab.heads import accuracy_at_window
    from ..lab.train.loop import set_window

    cfg = model.cfg
    B, N = batch.inputs.shape
    n_queries = int((batch.roles[0] == ROLE_QUERY).sum())
    runs: dict[int, tuple[dict, float]] = {}           # window -> (attention maps, accuracy)

    def run_at(w: int) -> tuple[dict, float]:
        if w not in runs:
            set_window(model, w)
            try:
                maps = model.attention_maps(batch.inputs)
            finally:
                set_window(model, cfg.window)
            runs[w] = (maps, accuracy_at_window(model, batch, w))
        return runs[w]

    slider = {"continuous_update": False}
    Hq = model.cfg.n_heads
    controls = {
        "sample": W.IntSlider(value=sample, min=0, max=B - 1, description="sample", **slider),
        "layer": W.Dropdown(options=list(range(cfg.n_layers)),
                            value=cfg.n_layers - 1 if layer is None else layer, description="layer"),
        "head": W.Dropdown(options=list(range(Hq)), value=head, description="head"),
        "query": W.IntSlider(value=query, min=0, max=n_queries - 1, description="query #", **slider),
        "window": W.IntSlider(value=cfg.window if window is None else window, min=1, max=N,
                              description="window w", **slider),
    }
    out = W.Image(format="png")
    state: dict[str, Any] = {"controls": controls, "output": out, "view": None, "row": None,
                             "answer": None, "accuracy": None, "fig": None, "updates": 0}

    def render(v: dict) -> plt.Figure:
        maps, acc = run_at(v["window"])
        roles = batch.roles[v["sample"]].cpu()
        queries = (roles == ROLE_QUERY).nonzero().flatten().tolist()
        p = queries[min(v["query"], len(queries) - 1)]
        view = layer_view(maps["layers"][v["layer"]], cfg.attn, v["head"], v["window"], v["sample"])
        row = query_view(view, roles, p)
        x, y = batch.inputs[v["sample"]].cpu(), batch.targets[v["sample"]].cpu()
        pred = int(maps["logits"][v["sample"], p].argmax())
        answer = {"position": p, "key": int(x[p]), "target": int(y[p]), "prediction": pred,
                  "right": pred == int(y[p])}
        state.update(view=view, row=row, answer=answer, accuracy=acc)
        verdict = "right" if answer["right"] else "WRONG"
        return plot_query_view(
            view, row, roles,
            title=(f"{cfg.attn.upper()} layer {v['layer']} head {v['head']}, w={v['window']}: "
                   f"query p={p} asks key {answer['key']}, the model answers {pred}, target "
                   f"{answer['target']} ({verdict}); held-out accuracy at this w: {acc:.3f}\n"))

    bind_controls(controls, render, state, show)
    widget = W.VBox([W.HBox([W.VBox([controls["query"], controls["window"], controls["sample"]]),
                             W.VBox([controls["layer"], controls["head"]])]), out])
    return widget, state
