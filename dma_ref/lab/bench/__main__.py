"""``python -m dma_ref.lab.bench``: the benchmark's command line (``--help`` lists the options)."""

from __future__ import annotations

import sys

import torch

from .run import parse_args, run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("error: python -m dma_ref.lab.bench needs a CUDA GPU, and torch sees none "
              f"(torch {torch.__version__}). The recorded H200 results are in "
              "figures/bench/h200.json; plot them with python -m dma_ref.viz.perf.",
              file=sys.stderr)
        return 2
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
