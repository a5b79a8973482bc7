"""What a training run is: its configuration, the GPU preset, and the training data it draws.

Training data is drawn fresh at every step from ``data_streams`` generators (default 1, set to W
under torchrun): stream r is seeded with ``stream_seed(seed, r)`` (stream 0 with ``seed`` itself)
and yields batch_size / data_streams sequences per step. A single process draws every stream and
concatenates the sub-batches in stream order; under torchrun rank r draws stream r. So one
process with ``--data-streams 2`` and two ranks train on the same global batches, and their losses
agree up to the order of float reductions (tests/test_train_ddp.py). The held-out set comes from
``seed + 10_000`` (another stream, never trained on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...nn import ModelConfig
from ..tasks import TaskBatch, make_batch

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """One training run. Defaults: the CPU experiment recorded in figures/mqar/results.json."""

    task: str = "mqar"
    attn: str = "dma"
    seq_len: int = 64
    pairs: int = 4
    query_start: int | None = 40         # queries only at positions >= this (None: right after the pairs)
    vocab_size: int = 64
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    window: int = 16
    form: str = "exp"
    steps: int = 700
    batch_size: int = 64                 # the global batch (split over the ranks under torchrun)
    lr: float = 1e-3
    dma_lr_mult: float = 10.0            # Delta and A learn this much faster (see loop.train())
    warmup: int = 50
    window_hold: int = 250               # window curriculum (window_at): first steps with w = seq_len,
    window_anneal: int = 200             # then steps over which w shrinks linearly to `window`
    weight_decay: float = 0.1
    eval_every: int = 50
    eval_size: int = 512
    seed: int = 0
    data_streams: int = 1                # training-data generators (DataStreams); = W under torchrun
    precision: str = "auto"              # "auto": bf16 autocast on CUDA, fp32 elsewhere; "bf16"; "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.data_streams < 1:
            raise ValueError(f"data_streams must be >= 1, got {self.data_streams}")

    def model_config(self) -> ModelConfig:
        return ModelConfig(vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers,
                           n_heads=self.n_heads, attn=self.attn, window=self.window, form=self.form)

    def batch(self, n: int, generator: torch.Generator) -> TaskBatch:
        """``n`` sequences of the task drawn from ``generator``: int64 ``[n, seq_len]`` on the CPU."""
        return make_batch(self.task, n, seq_len=self.seq_len, vocab_size=self.vocab_size,
                          generator=generator, num_pairs=self.pairs, query_start=self.query_start)


# The longer GPU run (python -m dma_ref.lab.train --compare --preset gpu ...): N = 128 (twice the
# CPU run), 4 pairs, w = 32 (N/4, as on the CPU), batch 128. Two sliding-window layers reach
# 2 (w - 1) = 62 positions back and the pairs end at 7, so queries from position 70 on are out of
# SWA's reach (they sit at >= 80); DMA keeps 32 of up to 128 keys per query.
# Not longer because at larger N MHA itself plateaus far longer before it learns the task, and DMA
# must hold w = N about as long: hold 1000 steps (twice MHA's plateau at N = 128), anneal over
# 500, then 1000 at w. The runs behind these numbers: figures/bench/PERF_NOTES.md.
GPU_PRESET = {"seq_len": 128, "pairs": 4, "query_start": 80, "vocab_size": 64, "window": 32,
              "d_model": 128, "batch_size": 128, "lr": 1e-3, "steps": 2500, "window_hold": 1000,
              "window_anneal": 500, "eval_every": 250, "eval_size": 512}
GPU_MAX_SECONDS = 200.0                # --preset gpu: each run stops after this long (a guard)

# Training streams r >= 1 are seeded with seed + STREAM_SEED_OFFSET + r: never the held-out
# seed (seed + 10_000), and stream 0 keeps ``seed`` so that data_streams=1 draws exactly the
# stream of the recorded CPU runs.
STREAM_SEED_OFFSET = 20_000
HELD_OUT_SEED_OFFSET = 10_000


def stream_seed(seed: int, r: int) -> int:
    """The seed of training-data stream ``r`` (``seed`` itself for stream 0)."""
    return seed if r == 0 else seed + STREAM_SEED_OFFSET + r


class DataStreams:
    """The training batches: ``cfg.data_streams`` seeded generators, each yielding
    ``cfg.batch_size / cfg.data_streams`` sequences per step.

    ``streams``: the streams this process draws (default all of them, as a single process does;
    rank r of a data-parallel run draws only ``[r]``). ``next()`` returns their sub-batches
    concatenated in stream order: a ``TaskBatch`` of ``[len(streams) * batch_size / data_streams,
    seq_len]`` tensors on the CPU. With one stream this is exactly ``cfg.batch(batch_size, g)``
    with ``g`` seeded by ``cfg.seed``, the stream of the recorded runs.
    """

    def __init__(self, cfg: TrainConfig, streams: Sequence[int] | None = None):
        if cfg.batch_size % cfg.data_streams:
            raise ValueError(f"batch_size={cfg.batch_size} must be divisible by "
                             f"data_streams={cfg.data_streams} (each stream yields an equal share)")
        self.cfg = cfg
        self.per_stream = cfg.batch_size // cfg.data_streams
        self.streams = list(range(cfg.data_streams) if streams is None else streams)
        self.generators = [torch.Generator().manual_seed(stream_seed(cfg.seed, r))
                           for r in self.streams]

    def next(self) -> TaskBatch:
        parts = [self.cfg.batch(self.per_stream, g) for g in self.generators]
        if len(parts) == 1:
            return parts[0]
        return TaskBatch(*(torch.cat([getattr(p, f) for p in parts])
                           for f in ("inputs", "targets", "roles")))


def held_out_batch(cfg: TrainConfig) -> TaskBatch:
    """The held-out set: ``cfg.eval_size`` sequences from seed ``cfg.seed + 10_000``, on the CPU."""
    return cfg.batch(cfg.eval_size, torch.Generator().manual_seed(cfg.seed + HELD_OUT_SEED_OFFSET))


def check_parallel(cfg: TrainConfig, world_size: int) -> None:
    """Raise ``ValueError`` unless ``cfg`` can be split over ``world_size`` processes: the global
    ``batch_size`` must divide evenly, and rank r must have a data stream of its own."""
    if world_size > 1 and cfg.batch_size % world_size:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the world size "
                         f"{world_size}: --batch-size is the global batch, split evenly over the "
                         f"{world_size} processes")
    if world_size > 1 and cfg.data_streams != world_size:
        raise ValueError(f"data_streams={cfg.data_streams} must equal the world size {world_size} "
                         "in a data-parallel run (rank r draws stream r); leave --data-streams "
                         "unset under torchrun")


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``cfg.precision`` on ``device`` (None: plain fp32).

    "auto" is bf16 on CUDA: the projections, SDPA and the Triton DMA kernels run in bf16 (the
    kernels take fp16/bf16/fp32 q, k, v; the scores stay fp32 because autocast runs softplus in
    fp32, and the kernel uses s in fp32 anyway), while parameters, the residual stream, the norms
    and the loss stay fp32. On the CPU "auto" is fp32 (the recorded CPU runs)."""
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16
