"""One training loop for the paper experiments: a model, a stream of token batches, evaluations.

It reuses the lab's pieces (``dma_ref.lab.train.loop``): AdamW with DMA's Delta and A at a
higher learning rate (``make_optimizer``), linear warmup and cosine decay (``lr_at``), the
window curriculum (``window_at``: every key kept for the first ``window_hold`` steps, then the
window shrinks to ``window``, the same for every windowed method), and the masked cross-entropy
(``lm_loss``). What differs from the MQAR trainer is the data: any ``draw(generator) -> (inputs,
targets)``, int64 ``[B, N]`` each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...nn import ModelConfig, TinyLM
from ..train.loop import lm_loss, lr_at, make_optimizer, progress_bar, set_window, window_at

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class FitConfig:
    """A run's schedule (field names as the lab's TrainConfig, whose helpers read them)."""

    steps: int
    seq_len: int
    window: int
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.1
    dma_lr_mult: float = 10.0
    window_hold: int = 0
    window_anneal: int = 0
    eval_every: int = 50
    seed: int = 0


def fit(cfg: ModelConfig, run: FitConfig, draw: Callable[[torch.Generator], Batch],
        evaluate: Callable[[TinyLM], dict], *, desc: str = "", progress: bool = True) -> dict:
    """Train ``TinyLM(cfg)`` (seeded by ``run.seed``) for ``run.steps`` steps on ``draw``'s
    batches (a generator seeded by ``run.seed``). Every ``eval_every`` steps and at the end,
    ``evaluate(model)`` (under ``torch.no_grad``, eval mode, final window) is recorded with the
    step and the tokens seen. Returns ``{"curve": [{"step", "tokens", "train_loss", **evaluate},
    ...], "final": the last of them, "seconds", "params", "model"}``."""
    torch.manual_seed(run.seed)
    model = TinyLM(cfg)
    opt = make_optimizer(model, run)
    gen = torch.Generator().manual_seed(run.seed)
    curve: list[dict] = []
    tokens = 0
    t0 = time.perf_counter()
    bar = progress_bar(range(run.steps), desc, progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, run) * group["mult"]
        set_window(model, window_at(step, run))
        inputs, targets = draw(gen)
        loss = lm_loss(model(inputs), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += inputs.numel()
        last = step == run.steps - 1
        if (step + 1) % run.eval_every == 0 or last:
            set_window(model, run.window if last else window_at(step, run))
            model.eval()
            with torch.no_grad():
                point = {"step": step + 1, "tokens": tokens, "train_loss": float(loss),
                         **evaluate(model)}
            model.train()
            curve.append(point)
            bar.set_postfix({k: f"{v:.3g}" for k, v in point.items() if k != "tokens"
                             and isinstance(v, float)})
    set_window(model, run.window)
    return {"curve": curve, "final": curve[-1], "seconds": time.perf_counter() - t0,
            "params": model.num_params(), "model": model.eval()}
