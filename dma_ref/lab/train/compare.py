"""MHA, SWA and DMA trained alike, and the files that record them.

One run (``save_run(result, DIR)``): ``DIR/result.json`` (config, accuracy curve, loss curve,
final accuracy, wall time, tokens/s, attention share) and ``DIR/model.pt`` (state dict + config).
A comparison (``run_comparison(cfg, DIR)``) writes ``DIR/results.json`` as ``{"config": {...},
"accuracy": {"mha": a, "swa": b, "dma": c}}``, ``DIR/curves.json`` (the curves, and per model the
wall seconds, steps run, tokens/s and the share of step time spent in attention) and the figure
``DIR/comparison.png``; ``checkpoint=PATH`` also saves the trained DMA model. The curves and the
figure take the suffix of the results file name: ``results_gpu.json`` goes with
``curves_gpu.json`` and ``comparison_gpu.png``, ``results_gpu_ddp2.json`` with
``curves_gpu_ddp2.json`` and ``comparison_gpu_ddp2.png``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from ...nn import save_checkpoint
from ..distributed import DistContext
from .config import TrainConfig
from .loop import train

# Per-model measurements that run_comparison writes to curves*.json next to the curves.
RUN_METRICS = ("seconds", "steps_run", "tokens_per_s", "attention_share", "attention_share_steps")


def save_run(result: dict, out: Path) -> None:
    """``out/result.json`` (everything but the model) and ``out/model.pt``."""
    out.mkdir(parents=True, exist_ok=True)
    record = {k: v for k, v in result.items() if k != "model"}
    (out / "result.json").write_text(json.dumps(record, indent=1) + "\n")
    save_checkpoint(result["model"], out / "model.pt", extra={"train_config": result["config"]})


def run_comparison(cfg: TrainConfig, out: Path | str | None = None,
                   device: torch.device | str = "cpu", *, progress: bool = True,
                   attns=("mha", "swa", "dma"), checkpoint: Path | str | None = None,
                   results_name: str = "results.json", max_seconds: float | None = None,
                   dist: DistContext | None = None, time_every: int = 50) -> dict:
    """Train ``attns`` with the same config (only ``attn`` differs); returns
    ``{"config", "accuracy": {attn: acc}, "curves": {attn: [[step, acc], ...]}, "loss_curves",
    "seconds", "steps_run", "tokens_per_s", "attention_share", ..., "models"}``. With ``out``:
    writes ``results_name`` (config + accuracy, exactly), ``curves.json`` (curves, per-model
    measurements, machine) and ``comparison.png`` there, both with the suffix of
    ``results_name`` (``results_suffix``: ``curves_gpu.json`` for ``results_gpu.json``). With
    ``checkpoint``: saves the DMA model there. Under DDP (``dist``) only rank 0 writes.
    """
    ctx = dist if dist is not None else DistContext(device=torch.device(device))
    runs = {a: train(TrainConfig(**{**asdict(cfg), "attn": a}), device, progress=progress,
                     max_seconds=max_seconds, dist=dist, time_every=time_every) for a in attns}
    config = {k: v for k, v in asdict(cfg).items() if k != "attn"}
    res = {"config": config, "accuracy": {a: r["accuracy"] for a, r in runs.items()},
           "curves": {a: r["curve"] for a, r in runs.items()},
           "loss_curves": {a: r["loss_curve"] for a, r in runs.items()},
           **{m: {a: r[m] for a, r in runs.items()} for m in RUN_METRICS},
           "models": {a: r["model"] for a, r in runs.items()}}
    if out is not None and ctx.is_main:
        write_comparison(res, next(iter(runs.values())), Path(out), results_name, ctx)
    if checkpoint is not None and "dma" in runs and ctx.is_main:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(runs["dma"]["model"], checkpoint,
                        extra={"train_config": runs["dma"]["config"],
                               "accuracy": res["accuracy"]["dma"]})
    return res


def write_comparison(res: dict, first: dict, out: Path, results_name: str,
                     ctx: DistContext) -> None:
    """The files of ``run_comparison``'s result ``res`` in ``out``: ``results_name``, the curves
    and the figure. ``first``: one of the runs (``train``'s result), for how it was measured."""
    out.mkdir(parents=True, exist_ok=True)
    suffix = results_suffix(results_name)
    config = res["config"]
    (out / results_name).write_text(json.dumps(
        {"config": config, "accuracy": res["accuracy"]}, indent=1) + "\n")
    dev = ctx.device
    (out / f"curves{suffix}.json").write_text(json.dumps(
        {"curves": res["curves"], "loss_curves": res["loss_curves"],
         **{m: res[m] for m in RUN_METRICS},
         "attention_share_method": first["attention_share_method"],
         "precision": first["precision"], "world_size": ctx.world_size,
         "results": results_name, "device": str(dev),
         "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
         "threads": torch.get_num_threads(), "torch": torch.__version__}, indent=1) + "\n")
    save_comparison_figure(res, config, out / f"comparison{suffix}.png")


def save_comparison_figure(res: dict, config: dict, path: Path) -> None:
    """The comparison figure; skipped with a note where matplotlib is missing (the JSON
    records are written first and hold everything it shows)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"matplotlib is not installed: {path.name} not drawn", file=sys.stderr)
        return
    import matplotlib.pyplot as plt

    from ...viz.learned import plot_comparison
    fig = plot_comparison(res["accuracy"], res["curves"], config)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def results_suffix(results_name: str) -> str:
    """The suffix that ties a comparison's files together: ``results_gpu_ddp2.json`` ->
    ``"_gpu_ddp2"`` (``curves_gpu_ddp2.json``, ``comparison_gpu_ddp2.png``); ``results.json``
    -> ""."""
    stem = Path(results_name).stem
    return stem.removeprefix("results") if stem.startswith("results") else "_" + stem


def format_comparison(results: dict, curves: dict | None = None) -> str:
    """A text table of a recorded comparison: ``results`` as in ``results*.json`` (config,
    accuracy) and, if given, ``curves`` as in ``curves*.json`` (wall seconds, steps run,
    tokens/s, attention share per model; older records lack some, shown as "-")."""
    curves = curves or {}

    def metric(name: str, a: str, fmt: str) -> str:
        v = curves.get(name, {}).get(a)
        return "-" if v is None else format(v, fmt)

    header = (f"{'model':<6}{'accuracy':>10}{'wall s':>9}{'steps':>7}{'tokens/s':>11}"
              f"{'attn share':>12}")
    rows = [header]
    for a, acc in results["accuracy"].items():
        rows.append(f"{a:<6}{acc:>10.3f}{metric('seconds', a, '.0f'):>9}"
                    f"{metric('steps_run', a, 'd'):>7}{metric('tokens_per_s', a, '.3g'):>11}"
                    f"{metric('attention_share', a, '.0%'):>12}")
    return "\n".join(rows)
