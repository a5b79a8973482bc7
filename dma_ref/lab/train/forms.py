r"""DMA's two score forms trained alike: the paper's ``exp`` and the official code's ``log``.

    s = exp(A softplus(x))    form="exp"  (paper Eq. 3): the bias e^(e^(A softplus x)) overflows
    s = A softplus(x)         form="log"  (official code since October 2025)

Both rank keys the same way; they differ in the bias added to the kept logits. This trains DMA
on one recipe (the TrainConfig defaults unless overridden) with each form and several seeds, and
records each run's accuracy curve, or the step at which it diverged and why::

    python -m dma_ref.lab.train.forms --seeds 0 1 2 --out figures/mqar/score_forms.json
    python -m dma_ref.lab.train.forms --device cuda --precision fp32 --out /tmp/forms.json

A diverged run (``TrainingDiverged``: a non-finite loss or gradient) keeps its curve up to the
step before, ``accuracy`` null, and ``diverged_at`` and ``causes``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .config import TrainConfig
from .guard import TrainingDiverged
from .loop import train

FORMS = ("exp", "log")


def run_forms(cfg: TrainConfig, seeds: list[int], device: torch.device | str = "cpu", *,
              forms: tuple[str, ...] = FORMS, progress: bool = True,
              on_run: Callable[[dict], None] | None = None) -> dict:
    """Train DMA with ``cfg`` once per (form, seed). Returns ``{"config", "runs": {"<form>_s<seed>":
    {"form", "seed", "accuracy" (None if diverged), "curve", "loss_curve", "seconds",
    "diverged_at", "causes"}}}``; ``on_run(record so far)`` is called after every run (the CLI
    saves the file then, so that a long series keeps what it finished)."""
    config = {k: v for k, v in asdict(cfg).items() if k not in ("attn", "form", "seed")}
    runs: dict[str, dict] = {}
    for form in forms:
        for seed in seeds:
            run_cfg = replace(cfg, attn="dma", form=form, seed=seed)
            t0 = time.perf_counter()
            try:
                res = train(run_cfg, device, progress=progress, time_every=0)
                rec = {"accuracy": res["accuracy"], "curve": res["curve"],
                       "loss_curve": res["loss_curve"], "diverged_at": None, "causes": []}
            except TrainingDiverged as err:
                rec = {"accuracy": None, "curve": err.curve, "loss_curve": err.loss_curve,
                       "diverged_at": err.step, "causes": err.causes}
            runs[f"{form}_s{seed}"] = {"form": form, "seed": seed, **rec,
                                       "seconds": round(time.perf_counter() - t0, 1)}
            if on_run is not None:
                on_run({"config": config, "runs": runs})
    return {"config": config, "runs": runs}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m dma_ref.lab.train.forms", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", help="as TrainConfig.precision")
    p.add_argument("--steps", type=int, default=None, help="override TrainConfig.steps")
    p.add_argument("--lr", type=float, default=None, help="override TrainConfig.lr")
    p.add_argument("--out", type=Path, required=True, help="the JSON record to write")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    opts = p.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    cfg = TrainConfig(precision=opts.precision)
    if opts.steps is not None:
        cfg = replace(cfg, steps=opts.steps)
    if opts.lr is not None:
        cfg = replace(cfg, lr=opts.lr)
    if opts.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False           # fp32 means fp32
    t0 = time.perf_counter()
    gpu = torch.cuda.get_device_name() if opts.device == "cuda" else None
    opts.out.parent.mkdir(parents=True, exist_ok=True)

    def save(partial: dict) -> dict:
        rec = {"what": "DMA on the MQAR recipe, score form exp vs log, per seed",
               "command": "python -m dma_ref.lab.train.forms " + " ".join(argv or []),
               "machine": {"gpu": gpu, "cpu": platform.processor() or platform.machine(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__},
               "wall_seconds": round(time.perf_counter() - t0, 1), **partial}
        opts.out.write_text(json.dumps(rec, indent=1) + "\n")
        return rec

    rec = save(run_forms(cfg, opts.seeds, opts.device, forms=tuple(opts.forms), on_run=save))
    for name, r in rec["runs"].items():
        outcome = (f"diverged at step {r['diverged_at']}" if r["accuracy"] is None
                   else f"accuracy {r['accuracy']:.3f}")
        print(name, outcome, f"({r['seconds']} s)")
    return rec


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
