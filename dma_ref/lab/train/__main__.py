r"""Train tiny MHA / sliding-window / DMA language models on MQAR, and compare them.

    python -m dma_ref.lab.train --task mqar --attn dma --seq-len 64 --pairs 4 --window 16 \
        --query-start 40 --steps 700 --seed 0 --out /tmp/mqar_dma
    python -m dma_ref.lab.train --compare --out figures/mqar --checkpoint dma_ref/data/mqar_dma.pt
                                      # mha, swa and dma, TrainConfig defaults (~6 min, 2 cores)
    python -m dma_ref.lab.train --compare --preset gpu --device cuda --out figures/mqar \
        --results-name results_gpu.json  # GPU_PRESET, bf16 autocast, Triton DMA backend
    bash scripts/gpu_mqar.sh          # the same on a GPU machine without installing the package

Data-parallel over the GPUs (or CPU processes) of one host, through torch.distributed and
DistributedDataParallel (NCCL on CUDA, gloo on the CPU; ``dma_ref.lab.distributed``)::

    torchrun --nproc_per_node=2 -m dma_ref.lab.train --compare --preset gpu --device cuda \
        --out figures/mqar --results-name results_gpu_ddp2.json

``--batch-size`` stays the global batch: each of the W processes trains on batch_size / W
sequences per step (it must divide), and gradients are averaged over them. Rank 0 alone writes
the results and checkpoints and shows the progress bar; the other ranks print nothing. Under
torchrun ``--data-streams`` defaults to W (rank r draws training stream r).

Options not given take the value of ``--preset`` (cpu: the TrainConfig defaults; gpu:
GPU_PRESET over them). Outputs of one run (``--out DIR``): ``DIR/result.json`` and
``DIR/model.pt``; of ``--compare``: ``DIR/results.json``, ``DIR/curves.json`` and
``DIR/comparison.png``, the last two with the suffix of ``--results-name`` (``results_gpu.json``
goes with ``curves_gpu.json`` and ``comparison_gpu.png``); ``--checkpoint PATH`` also saves the
trained DMA model. The last line printed is a JSON summary (accuracy, seconds, steps run,
tokens/s, attention share).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path

import torch

from ...nn import TinyLM, save_checkpoint
from ..distributed import DistContext, init_distributed, shutdown, world_size_from_env
from .compare import run_comparison, save_run
from .config import GPU_MAX_SECONDS, GPU_PRESET, PRECISIONS, TrainConfig, check_parallel
from .guard import TrainingDiverged
from .loop import train

SUMMARY = ("accuracy", "seconds", "steps_run", "tokens_per_s", "attention_share")


def build_parser() -> argparse.ArgumentParser:
    """The command line. The TrainConfig options and ``--max-seconds`` have no argparse default
    (``SUPPRESS``): an option is in the parsed namespace exactly when the user gave it, under
    any abbreviation argparse accepts, so the preset fills in only what was not given."""
    p = argparse.ArgumentParser(prog="python -m dma_ref.lab.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        value = f.default if f.default is not MISSING else None
        if f.name == "query_start":
            p.add_argument(flag, type=int, help=f"first query position (-1: right after the "
                                                f"pairs; default {value})")
        elif f.name == "precision":
            p.add_argument(flag, choices=PRECISIONS,
                           help=f"auto: bf16 autocast on CUDA, fp32 on the CPU (default {value})")
        elif f.name == "mix_divisors":
            p.add_argument(flag, type=int_tuple, help="also train at seq_len / d for each d, "
                                                      f"comma-separated ('' for none; default {value})")
        elif f.name == "gap_power":
            p.add_argument(flag, type=optional_float, help="power law of the query gaps "
                                                           f"('none': uniform; default {value})")
        elif isinstance(value, bool):
            p.add_argument(flag, type=yes_no, help=f"yes or no (default {'yes' if value else 'no'})")
        elif f.name == "data_streams":
            p.add_argument(flag, type=int,
                           help="training-data streams (default 1; under torchrun: the world size)")
        else:
            p.add_argument(flag, type=type(value), help=f"default {value}")
    p.add_argument("--compare", action="store_true", default=False,
                   help="train mha, swa and dma with this config")
    p.add_argument("--preset", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: the configuration GPU_PRESET (explicit flags still win)")
    p.add_argument("--out", type=Path, default=None, help="output folder (e.g. figures/mqar)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="with --compare: save the DMA model here (e.g. dma_ref/data/mqar_dma.pt)")
    p.add_argument("--results-name", default="results.json",
                   help="with --compare: results.json (CPU) or results_gpu.json")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--max-seconds", type=float,
                   help="stop each run after this long (--preset gpu: GPU_MAX_SECONDS)")
    return p


def int_tuple(text: str) -> tuple[int, ...]:
    """``"4,2"`` (or ``"(4, 2)"``) -> ``(4, 2)``; ``""`` or ``"()"`` -> ``()``."""
    return tuple(int(t) for t in text.strip("()[] ").split(",") if t.strip())


def optional_float(text: str) -> float | None:
    """A float, or None for ``none``."""
    return None if text.strip().lower() == "none" else float(text)


def yes_no(text: str) -> bool:
    """``yes/true/1`` -> True, ``no/false/0`` -> False."""
    t = text.strip().lower()
    if t in ("yes", "true", "1"):
        return True
    if t in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def parse_options(argv: list[str] | None = None, world: int = 1
                  ) -> tuple[TrainConfig, argparse.Namespace, float | None]:
    """``(config, namespace, max_seconds)`` of the command line ``argv`` (None: ``sys.argv``)
    for a run over ``world`` processes: the options given, over the preset, over the
    TrainConfig defaults."""
    opts = build_parser().parse_args(argv)
    given = {f.name: getattr(opts, f.name) for f in fields(TrainConfig) if f.name in opts}
    values = {**(GPU_PRESET if opts.preset == "gpu" else {}), **given}
    if values.get("query_start") is not None and values["query_start"] < 0:
        values["query_start"] = None
    if world > 1 and "data_streams" not in given:
        values["data_streams"] = world         # rank r draws stream r (see config.DataStreams)
    default_seconds = GPU_MAX_SECONDS if opts.preset == "gpu" else None
    return TrainConfig(**values), opts, getattr(opts, "max_seconds", default_seconds)


def run(cfg: TrainConfig, opts: argparse.Namespace, ctx: DistContext,
        max_seconds: float | None) -> dict:
    """One model, or the comparison with ``--compare``; writes their files under ``--out``."""
    if opts.compare:
        return run_comparison(cfg, opts.out, ctx.device, checkpoint=opts.checkpoint,
                              results_name=opts.results_name, max_seconds=max_seconds, dist=ctx)
    res = train(cfg, ctx.device, max_seconds=max_seconds, dist=ctx)
    if opts.out is not None and ctx.is_main:
        save_run(res, opts.out)
    return res


def save_last_good(err: TrainingDiverged, cfg: TrainConfig, out: str | Path | None) -> Path:
    """Save the weights of the last good step as ``OUT/last_good.pt`` (``./last_good.pt``
    without ``--out``), a checkpoint ``dma_ref.nn.load_checkpoint`` reads."""
    path = Path(out if out is not None else ".") / "last_good.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    model = TinyLM(cfg.model_config())
    model.load_state_dict(err.last_good)
    save_checkpoint(model, path, {"diverged_at_step": err.step, "causes": err.causes})
    return path


def main(argv: list[str] | None = None) -> dict:
    """Run the command line ``argv`` (None: ``sys.argv``); returns ``train``'s result, or
    ``run_comparison``'s with ``--compare``."""
    world = world_size_from_env()
    cfg, opts, max_seconds = parse_options(argv, world)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    check_parallel(cfg, world)                 # before any process group exists: a clean error
    ctx = init_distributed(device)
    try:
        t0 = time.perf_counter()
        try:
            res = run(cfg, opts, ctx, max_seconds)
        except TrainingDiverged as err:
            if ctx.is_main:
                path = save_last_good(err, cfg, opts.out)
                print(f"error: {err}\nthe weights of the last good step (before step "
                      f"{err.step}'s update) are in {path}", file=sys.stderr)
            raise
        summary = {m: res[m] for m in SUMMARY}
        if not opts.compare:
            summary = {"attn": cfg.attn, **summary}
        summary["total_seconds"] = time.perf_counter() - t0
        summary["threads"] = torch.get_num_threads()
        summary["world_size"] = ctx.world_size
        if ctx.is_main:
            print(json.dumps(summary))
    finally:
        shutdown(ctx)
    return res


if __name__ == "__main__":
    main()
