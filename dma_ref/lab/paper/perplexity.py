"""Perplexity at toy scale (the paper's Fig. 5 in spirit): byte-level language models on a corpus
that ships with CPython (``pydoc_data.topics``: the reference manual's topic texts, ~470 KB).

The corpus is the topics joined in key order, as UTF-8 bytes (vocabulary 256); its last 10%
is held out. Training draws random windows of ``seq_len + 1`` bytes from the first 90%; the
validation set is fixed: ``eval_seqs`` evenly spaced windows of the held-out part. Every method
gets the same model (width, layers, heads), the same parameter count (``sizing.equal_params``:
the MLP absorbs the attention's difference), the same tokens and the same schedule; SWA, NSA
and DMA keep ``window`` keys (NSA: per branch). Reported: validation loss (nats per byte),
perplexity, bits per byte, FLOPs per token, and the loss curve against training FLOPs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ...nn import ModelConfig
from ..train.loop import lm_loss
from .fit import FitConfig, fit
from .jobs import run_methods
from .records import METHODS, start_record
from .sizing import equal_params, flops_per_token


@dataclass
class PerplexityConfig:
    seq_len: int = 256
    window: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    batch_size: int = 8
    steps: int = 800
    lr: float = 3e-3
    eval_every: int = 100
    eval_seqs: int = 64
    held_out: float = 0.1
    seed: int = 0


SMOKE = {"seq_len": 64, "window": 16, "d_model": 32, "n_heads": 2, "batch_size": 4, "steps": 6,
         "eval_every": 3, "eval_seqs": 4}


def corpus_bytes() -> torch.Tensor:
    """uint8 ``[n]``: CPython's ``pydoc_data.topics``, topics joined in key order, UTF-8."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def split(data: torch.Tensor, held_out: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, validation)`` int64: the last ``held_out`` share is validation."""
    cut = int(len(data) * (1 - held_out))
    return data[:cut].long(), data[cut:].long()


def windows(data: torch.Tensor, starts: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` int64 ``[len(starts), n]``: bytes ``s .. s+n-1`` and the next ones."""
    idx = starts[:, None] + torch.arange(n + 1)
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]


def validation_set(val: torch.Tensor, n_seqs: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_seqs`` evenly spaced windows of the held-out bytes."""
    starts = torch.linspace(0, len(val) - n - 1, n_seqs).long()
    return windows(val, starts, n)


def model_config(cfg: PerplexityConfig, attn: str) -> ModelConfig:
    base = ModelConfig(vocab_size=256, d_model=cfg.d_model, n_layers=cfg.n_layers,
                       n_heads=cfg.n_heads, window=cfg.window, form="log", mlp=True)
    return equal_params(base, attn)


def corpus_info(cfg: PerplexityConfig) -> dict:
    train_data, val_data = split(corpus_bytes(), cfg.held_out)
    return {"source": "pydoc_data.topics (CPython)", "bytes": len(train_data) + len(val_data),
            "train_bytes": len(train_data), "validation_bytes": len(val_data)}


def train_method(cfg: PerplexityConfig, attn: str, progress: bool = False) -> dict:
    """Train and evaluate one method; its entry of ``results[attn]``."""
    train_data, val_data = split(corpus_bytes(), cfg.held_out)
    vx, vy = validation_set(val_data, cfg.eval_seqs, cfg.seq_len)

    def draw(g: torch.Generator):
        starts = torch.randint(0, len(train_data) - cfg.seq_len - 1, (cfg.batch_size,), generator=g)
        return windows(train_data, starts, cfg.seq_len)

    def evaluate(model) -> dict:
        loss = sum(float(lm_loss(model(vx[i:i + 16]), vy[i:i + 16])) * len(vx[i:i + 16])
                   for i in range(0, len(vx), 16)) / len(vx)
        return {"val_loss": loss}

    schedule = FitConfig(steps=cfg.steps, seq_len=cfg.seq_len, window=cfg.window, lr=cfg.lr,
                         eval_every=cfg.eval_every, seed=cfg.seed)
    mcfg = model_config(cfg, attn)
    res = fit(mcfg, schedule, draw, evaluate, desc=f"perplexity {attn}", progress=progress)
    fpt = flops_per_token(mcfg, cfg.seq_len)
    loss = res["final"]["val_loss"]
    return {"val_loss": loss, "perplexity": math.exp(loss), "bits_per_byte": loss / math.log(2),
            "params": res["params"], "mlp_hidden": mcfg.mlp_hidden, "flops_per_token": fpt,
            "train_flops": 3 * fpt * res["final"]["tokens"], "tokens": res["final"]["tokens"],
            "seconds": res["seconds"],
            "curve": [{**p, "train_flops": 3 * fpt * p["tokens"]} for p in res["curve"]]}


def run(cfg: PerplexityConfig, *, methods=METHODS, out: Path | None = None, resume: bool = False,
        progress: bool = True, jobs: int = 1, threads: int | None = None) -> dict:
    """Train and evaluate every method (``jobs`` at a time); the record is saved after each."""
    record = start_record("perplexity", asdict(cfg), cfg.seed, out, resume)
    record["corpus"] = corpus_info(cfg)
    todo = [a for a in methods if a not in record["results"]]
    return run_methods(record, train_method, [(cfg, a, progress and jobs == 1) for a in todo],
                       todo, out=out, jobs=jobs, threads=threads, progress=progress)


def smoke_config(cfg: PerplexityConfig | None = None) -> PerplexityConfig:
    return replace(cfg or PerplexityConfig(), **SMOKE)
