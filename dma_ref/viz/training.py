"""Figures of training runs: a live run's loss and accuracy, and the exp-vs-log score forms."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

FORM_COLORS = {"exp": "tab:red", "log": "tab:blue"}


def _shade_anneal(ax, config: dict) -> None:
    """Grey band over the steps in which the window shrinks from seq_len to w."""
    hold, anneal = config.get("window_hold", 0), config.get("window_anneal", 0)
    if anneal:
        ax.axvspan(hold, hold + anneal, color="black", alpha=0.07, linewidth=0)


def plot_training(run: dict, *, chance: float | None = None, title: str = ""):
    """Loss (left, log scale) and held-out accuracy (right) of one ``train`` result (its
    ``loss_curve`` and ``curve``: ``[[step, value], ...]``). ``chance``: an accuracy drawn as a
    dotted line (e.g. 1/P, a guess among the values in the context)."""
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.4))
    loss = np.asarray(run["loss_curve"], dtype=float)
    acc = np.asarray(run["curve"], dtype=float)
    for ax in (ax_l, ax_a):
        _shade_anneal(ax, run.get("config", {}))
        ax.set_xlabel("training step")
    ax_l.plot(loss[:, 0], loss[:, 1], marker=".", color="tab:purple")
    ax_l.set_yscale("log")
    ax_l.set_ylabel("training loss (queries)")
    ax_a.plot(acc[:, 0], acc[:, 1], marker=".", color="tab:blue", label="DMA")
    if chance is not None:
        ax_a.axhline(chance, color="gray", linestyle=":", label=f"chance 1/P = {chance:.3g}")
    ax_a.set_ylim(0, 1.02)
    ax_a.set_ylabel("held-out accuracy (queries)")
    ax_a.legend(loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_score_forms(record: dict):
    """Held-out accuracy over training of each run of a score-form record (``python -m
    dma_ref.lab.train.forms``): one line per (form, seed), a cross where a run diverged."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    _shade_anneal(ax, record.get("config", {}))
    labelled: set[str] = set()
    for run in record["runs"].values():
        form = run["form"]
        c = np.asarray(run["curve"] or [[0, math.nan]], dtype=float)
        label = None if form in labelled else f"form={form!r}"
        labelled.add(form)
        ax.plot(c[:, 0], c[:, 1], color=FORM_COLORS.get(form), alpha=0.8, label=label)
        if run["diverged_at"] is not None:
            y = c[-1, 1] if len(run["curve"]) else 0.0
            ax.plot([run["diverged_at"]], [y], marker="x", markersize=10, color=FORM_COLORS.get(form))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out accuracy (queries)")
    ax.set_title("DMA on MQAR, one line per seed (x: the run diverged to NaN)", fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
