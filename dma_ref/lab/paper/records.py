"""The experiments' records: ``figures/paper/<name>.json`` with the config, the seed, the package
versions, the wall time, and per method (``mha``, ``swa``, ``mla``, ``nsa``, ``dma``) its results.

A record is written after every finished method, so an interrupted run resumes (``--resume``)
from the methods already there, as long as the config is the same.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

from ...paths import FIGURES

METHODS = ("mha", "swa", "mla", "nsa", "dma")
PAPER_DIR = FIGURES / "paper"


def versions() -> dict[str, str | int]:
    """Python, torch, numpy, the platform and torch's CPU threads: what the numbers ran on."""
    import numpy

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads()}


def record_path(name: str, out: Path | None = None) -> Path:
    return (out or PAPER_DIR) / f"{name}.json"


def load_record(name: str, out: Path | None = None) -> dict:
    """The recorded experiment ``name`` (``"mqar"``, ``"perplexity"`` or ``"passkey"``)."""
    return json.loads(record_path(name, out).read_text())


def start_record(name: str, config: dict, seed: int, out: Path | None, resume: bool) -> dict:
    """A record to fill: the one on disk when ``resume`` and its config and seed match ``config``
    and ``seed`` (its finished methods are kept), else a fresh one."""
    path = record_path(name, out)
    if resume and path.exists():
        old = json.loads(path.read_text())
        if old.get("config") == json.loads(json.dumps(config)) and old.get("seed") == seed:
            return old
    return {"experiment": name, "config": config, "seed": seed, "versions": versions(),
            "wall_seconds": 0.0, "results": {}}


def save_record(record: dict, out: Path | None = None) -> Path:
    path = record_path(record["experiment"], out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path
