"""The MQAR grid (the paper's Fig. 6 in spirit): the five methods on the lab's MQAR recipe
(``dma_ref.lab.train.TrainConfig``: Zoology-style pairs, queries in the second half, a mix of
lengths every step, short convolution, window curriculum) across sequence lengths N, pair
counts P = N/8 and N/4 (the paper's Fig. 6 goes to N/4; at N/4 the pairs fill the first half),
windows below and at P (w < P: no method with w keys can keep every pair; w >= P: it can) and two
model widths. MHA and MLA keep every key, so they are trained once per (N, P, width). Accuracy:
the share of held-out queries answered right (chance 2/V).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..train import TrainConfig, train
from .jobs import run_methods
from .records import METHODS, start_record

WINDOWLESS = ("mha", "mla")


@dataclass
class MQARGrid:
    seq_lens: tuple[int, ...] = (128, 256)
    pairs_divisors: tuple[int, ...] = (8, 4)   # P = N / divisor
    window_fractions: tuple[float, ...] = (0.5, 1.0)   # w = P * f: w < P and w = P
    widths: tuple[int, ...] = (32, 64)
    train: dict = field(default_factory=lambda: {"steps": 900, "batch_size": 32,
                                                 "mix_divisors": (2,), "window_hold": 400,
                                                 "window_anneal": 200, "eval_every": 100,
                                                 "eval_size": 256})
    seed: int = 0


SMOKE = {"seq_lens": (32,), "pairs_divisors": (8,), "widths": (16,), "window_fractions": (0.5,),
         "train": {"steps": 4, "batch_size": 4, "window_hold": 1, "window_anneal": 1,
                   "eval_every": 2, "eval_size": 8, "mix_divisors": (2,)}}


def cells(grid: MQARGrid, methods=METHODS) -> list[dict]:
    """Every run of the grid: ``{"key", "attn", "seq_len", "pairs", "window", "d_model"}``;
    windowless methods once per (N, P, width), with the smallest window (unused)."""
    out = []
    for N in grid.seq_lens:
        for P in (N // divisor for divisor in grid.pairs_divisors):
            for d in grid.widths:
                for f in grid.window_fractions:
                    w = max(1, round(P * f))
                    for attn in methods:
                        if attn in WINDOWLESS and f != grid.window_fractions[0]:
                            continue
                        key = f"N{N}_P{P}_d{d}" + ("" if attn in WINDOWLESS else f"_w{w}")
                        out.append({"key": key, "attn": attn, "seq_len": N, "pairs": P,
                                    "window": w, "d_model": d})
    return out


def train_config(grid: MQARGrid, cell: dict) -> TrainConfig:
    N = cell["seq_len"]
    return TrainConfig(**{**grid.train, "attn": cell["attn"], "seq_len": N, "pairs": cell["pairs"],
                          "query_start": N // 2, "window": cell["window"],
                          "d_model": cell["d_model"], "seed": grid.seed})


def cost(cell: dict) -> float:
    """A run's relative CPU time (measured on one core: NSA's three branches cost ~4x)."""
    return cell["seq_len"] * cell["d_model"] * (4.0 if cell["attn"] == "nsa" else 1.0)


def train_cell(grid: MQARGrid, cell: dict, progress: bool = False) -> dict:
    """Train one cell of the grid; its entry of ``results[attn][key]``."""
    res = train(train_config(grid, cell), progress=progress, time_every=0)
    return {**{k: cell[k] for k in ("seq_len", "pairs", "window", "d_model")},
            "accuracy": res["accuracy"], "params": res["params"], "seconds": res["seconds"],
            "curve": res["curve"]}


def run(grid: MQARGrid, *, methods=METHODS, out: Path | None = None, resume: bool = False,
        progress: bool = True, jobs: int = 1, threads: int | None = None,
        widths: tuple[int, ...] | None = None) -> dict:
    """Train every cell of ``methods`` (and of ``widths``, default all of the grid's), ``jobs``
    at a time (see ``jobs.map_runs``); ``results[attn][key] = {"accuracy", "seq_len", "pairs",
    "window", "d_model", "params", "seconds", "curve"}``, saved after each run. The record's
    config is the whole grid: a run of some cells is resumed later into the full grid."""
    record = start_record("mqar", asdict(grid), grid.seed, out, resume)
    chosen = [c for c in cells(grid, methods) if widths is None or c["d_model"] in widths]
    if not chosen:
        raise ValueError(f"widths={widths}: the grid's widths are {grid.widths}")
    record["recipe"] = asdict(train_config(grid, chosen[0]))
    todo = [c for c in chosen if c["key"] not in record["results"].get(c["attn"], {})]
    todo.sort(key=cost, reverse=True)         # the longest runs first: the workers finish together
    return run_methods(record, train_cell, [(grid, c, progress and jobs == 1) for c in todo],
                       [(c["attn"], c["key"]) for c in todo], out=out, jobs=jobs, threads=threads,
                       progress=progress)


def smoke_config(grid: MQARGrid | None = None) -> MQARGrid:
    return replace(grid or MQARGrid(), **SMOKE)
