"""Run the paper experiments and record them under ``figures/paper/``.

    python -m dma_ref.lab.paper all              # perplexity, passkey, mqar: ~3.4 h, 1 run at a time
    python -m dma_ref.lab.paper all --jobs 2 --threads 1   # 2 runs at a time, 1 core each: ~1.7 h
    python -m dma_ref.lab.paper passkey --resume # skip the methods already recorded
    python -m dma_ref.lab.paper all --smoke --out /tmp/paper   # a seconds-long slice (CI)
    python -m dma_ref.lab.paper all --figures-only               # redraw from the records
    python -m dma_ref.lab.paper mqar --seed 1 --out figures/paper/seed1   # another seed
    python -m dma_ref.lab.paper mqar --seed 1 --out figures/paper/seed1 --methods dma --widths 64
                                                 # some cells of it (--resume fills in the rest)

Each experiment writes ``<name>.json`` (config, seed, versions, wall time, results per method)
and its figures (``<name>*.png``) in ``--out`` (default ``figures/paper``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from . import mqar, passkey, perplexity
from .records import METHODS, PAPER_DIR, load_record

EXPERIMENTS = {"perplexity": perplexity, "passkey": passkey, "mqar": mqar}
DEFAULTS = {"perplexity": perplexity.PerplexityConfig, "passkey": passkey.PasskeyConfig,
            "mqar": mqar.MQARGrid}


def parse_methods(text: str) -> tuple[str, ...]:
    """``"dma,nsa"`` -> ``("dma", "nsa")``; an unknown name is an error naming the known ones."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in METHODS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown or text!r}: choose from "
                                         f"{', '.join(METHODS)}")
    return names


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m dma_ref.lab.paper", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    p.add_argument("--resume", action="store_true",
                   help="keep the methods already recorded with the same config")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the pipeline only")
    p.add_argument("--out", type=Path, default=PAPER_DIR)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 avoids oversubscription when other jobs share the cores)")
    p.add_argument("--jobs", type=int, default=1,
                   help="training runs at a time, each in its own process with --threads threads "
                        "(default 1); e.g. --jobs 2 --threads 1 on 2 cores")
    p.add_argument("--seed", type=int, default=None,
                   help="the seed of data and initialisation (default: each config's, 0); "
                        "write another seed's records into their own --out")
    p.add_argument("--methods", type=parse_methods, default=METHODS,
                   help=f"comma-separated, from {','.join(METHODS)} (default all)")
    p.add_argument("--widths", type=lambda t: tuple(int(x) for x in t.split(",")), default=None,
                   help="mqar only: train the cells of these model widths (e.g. 64)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--figures-only", action="store_true",
                   help="redraw the figures from the records in --out; train nothing")
    args = p.parse_args(argv)
    if args.widths is not None and args.experiment != "mqar":
        p.error("--widths applies to mqar only")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    summary = {}
    for name in names:
        mod = EXPERIMENTS[name]
        cfg = mod.smoke_config() if args.smoke else DEFAULTS[name]()
        if args.seed is not None:
            cfg = replace(cfg, seed=args.seed)
        record = (load_record(name, args.out) if args.figures_only else
                  mod.run(cfg, out=args.out, resume=args.resume, progress=not args.no_progress,
                          jobs=args.jobs, threads=args.threads, methods=args.methods,
                          **({"widths": args.widths} if args.widths else {})))
        if not args.no_figures:
            from ...viz.paper import save_experiment_figures
            save_experiment_figures(name, record, args.out)
        summary[name] = {"wall_seconds": round(record["wall_seconds"], 1),
                         "methods": sorted(record["results"])}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
