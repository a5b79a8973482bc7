"""A passkey needle (the paper's Fig. 8 in spirit): a short digit string stated once at some depth
in filler tokens, asked for at the end; exact-match score on a grid of lengths x depths.

Tokens: digits ``0..9``, ``KEY`` = 10 (announces the passkey), ``ASK`` = 11 (asks for it),
fillers ``12 .. V-1`` drawn uniformly. A sequence of length L::

    f f ... f KEY d1 d2 d3 d4 f f ... f ASK d1 d2 d3        targets at the last 4 positions:
                                         d1 d2 d3 d4        (IGNORE elsewhere)

The needle ``KEY d1..dn`` starts at ``round(depth (L - 2n - 2))`` (depth 0: the very start,
1: right before the question). Exact match: every digit predicted right (argmax with the true
digits fed, so it equals greedy decoding of the whole string). The models are trained at one
length with depths drawn uniformly, then scored at ``length_factors`` x that length (1/4x to 4x:
longer sequences test extrapolation; RoPE has never seen the larger distances) and at
``depths``. SWA, NSA and DMA keep ``window`` keys; all use the lab's MQAR recipe model (short
convolution, no MLP) and its window curriculum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ...nn import ModelConfig, TinyLM
from ..tasks import IGNORE
from .fit import FitConfig, fit
from .jobs import run_methods
from .records import METHODS, start_record

KEY, ASK, FIRST_FILLER = 10, 11, 12


@dataclass
class PasskeyConfig:
    train_len: int = 128
    digits: int = 4
    vocab_size: int = 64
    window: int = 16
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    conv_kernel: int = 4
    batch_size: int = 16
    steps: int = 600
    lr: float = 3e-3
    window_hold: int = 250
    window_anneal: int = 150
    eval_every: int = 50
    length_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    eval_n: int = 32
    seed: int = 0


SMOKE = {"train_len": 32, "window": 8, "d_model": 32, "batch_size": 4, "steps": 6,
         "window_hold": 2, "window_anneal": 2, "eval_every": 3, "length_factors": (0.5, 1.0, 2.0),
         "depths": (0.0, 1.0), "eval_n": 4}


def passkey_batch(n: int, length: int, *, digits: int, vocab_size: int, generator: torch.Generator,
                  depth: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` int64 ``[n, length]`` (module docstring); ``depth`` None draws the
    needle's start uniformly."""
    room = length - 2 * digits - 2
    if room < 0:
        raise ValueError(f"length must be >= 2 * digits + 2 = {2 * digits + 2}, got {length}")
    if vocab_size <= FIRST_FILLER:
        raise ValueError(f"vocab_size must be > {FIRST_FILLER} (digits, KEY, ASK, fillers)")
    g = generator
    inputs = torch.randint(FIRST_FILLER, vocab_size, (n, length), generator=g)
    code = torch.randint(0, 10, (n, digits), generator=g)
    start = (torch.randint(0, room + 1, (n,), generator=g) if depth is None
             else torch.full((n,), round(depth * room)))
    rows = torch.arange(n)[:, None]
    inputs[rows, start[:, None] + torch.arange(digits + 1)] = torch.cat(
        [torch.full((n, 1), KEY), code], dim=1)
    inputs[:, length - digits:] = torch.cat([torch.full((n, 1), ASK), code[:, :-1]], dim=1)
    targets = torch.full((n, length), IGNORE)
    targets[:, length - digits:] = code
    return inputs, targets


@torch.no_grad()
def exact_match(model: TinyLM, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of sequences whose every scored digit is the argmax."""
    pred = model(inputs).argmax(-1)
    scored = targets != IGNORE
    return float(((pred == targets) | ~scored).all(-1).float().mean())


def eval_lengths(cfg: PasskeyConfig) -> list[int]:
    return [max(2 * cfg.digits + 2, round(cfg.train_len * f)) for f in cfg.length_factors]


def score_grid(model: TinyLM, cfg: PasskeyConfig) -> list[list[float]]:
    """Exact match ``[len(length_factors)][len(depths)]``, ``eval_n`` sequences per cell from a
    seed the training never draws (``seed + 10_000``)."""
    g = torch.Generator().manual_seed(cfg.seed + 10_000)
    grid = []
    for L in eval_lengths(cfg):
        row = []
        for d in cfg.depths:
            x, y = passkey_batch(cfg.eval_n, L, digits=cfg.digits, vocab_size=cfg.vocab_size,
                                 generator=g, depth=d)
            row.append(exact_match(model, x, y))
        grid.append(row)
    return grid


def model_config(cfg: PasskeyConfig, attn: str) -> ModelConfig:
    return ModelConfig(vocab_size=cfg.vocab_size, d_model=cfg.d_model, n_layers=cfg.n_layers,
                       n_heads=cfg.n_heads, attn=attn, window=cfg.window, form="log",
                       conv_kernel=cfg.conv_kernel, mlp=False)


def train_method(cfg: PasskeyConfig, attn: str, progress: bool = False) -> dict:
    """Train one method at ``train_len`` and score the grid; its entry of ``results[attn]``."""
    lengths = eval_lengths(cfg)
    held = passkey_batch(4 * cfg.eval_n, cfg.train_len, digits=cfg.digits,
                         vocab_size=cfg.vocab_size, generator=torch.Generator().manual_seed(
                             cfg.seed + 20_000))

    def draw(g: torch.Generator):
        return passkey_batch(cfg.batch_size, cfg.train_len, digits=cfg.digits,
                             vocab_size=cfg.vocab_size, generator=g)

    schedule = FitConfig(steps=cfg.steps, seq_len=cfg.train_len, window=cfg.window, lr=cfg.lr,
                         window_hold=cfg.window_hold, window_anneal=cfg.window_anneal,
                         eval_every=cfg.eval_every, seed=cfg.seed)
    res = fit(model_config(cfg, attn), schedule, draw,
              lambda m: {"exact_match": exact_match(m, *held)},
              desc=f"passkey {attn}", progress=progress)
    grid = score_grid(res["model"], cfg)
    return {"grid": grid, "train_exact_match": res["final"]["exact_match"],
            "mean_within_train_len": mean_rows(grid, lengths, cfg.train_len, longer=False),
            "mean_beyond_train_len": mean_rows(grid, lengths, cfg.train_len, longer=True),
            "params": res["params"], "seconds": res["seconds"], "curve": res["curve"]}


def run(cfg: PasskeyConfig, *, methods=METHODS, out: Path | None = None, resume: bool = False,
        progress: bool = True, jobs: int = 1, threads: int | None = None) -> dict:
    """Train every method (``jobs`` at a time) and score the grid; saved after each method."""
    record = start_record("passkey", asdict(cfg), cfg.seed, out, resume)
    record["lengths"] = eval_lengths(cfg)
    todo = [a for a in methods if a not in record["results"]]
    return run_methods(record, train_method, [(cfg, a, progress and jobs == 1) for a in todo],
                       todo, out=out, jobs=jobs, threads=threads, progress=progress)


def mean_rows(grid: list[list[float]], lengths: list[int], train_len: int, *, longer: bool) -> float:
    """Mean exact match over the lengths above ``train_len`` (``longer``) or up to it."""
    rows = [r for r, L in zip(grid, lengths) if (L > train_len) == longer]
    cells = [c for r in rows for c in r]
    return sum(cells) / max(len(cells), 1)


def smoke_config(cfg: PasskeyConfig | None = None) -> PasskeyConfig:
    return replace(cfg or PasskeyConfig(), **SMOKE)
