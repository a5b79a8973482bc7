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
    """One training run. Defaults: the CPU recipe recorded in figures/mqar/results_n256.json
    (MQAR at N = 256 with 16 pairs, queries from position 128, trained on a mix of lengths; a
    2-layer, 2-head model of width 64 with a short convolution and no MLP; DMA in the log form)."""

    task: str = "mqar"
    attn: str = "dma"
    seq_len: int = 256
    pairs: int = 16
    query_start: int | None = 128        # queries only at positions >= this (None: right after the pairs)
    gap_power: float | None = 0.01       # query gaps ~ power law (tasks.query_gap_weights); None: uniform
    mix_divisors: tuple[int, ...] = (4, 2)   # also train at seq_len / d for each d, every step (lengths())
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    conv_kernel: int = 4                 # short causal convolution before q, k, v (0: none)
    mlp: bool = False                    # blocks with a SwiGLU MLP
    window: int = 32
    form: str = "log"
    steps: int = 900
    batch_size: int = 64                 # sequences of seq_len per step (the global batch under torchrun)
    lr: float = 3e-3
    dma_lr_mult: float = 10.0            # Delta and A learn this much faster (see loop.make_optimizer())
    warmup: int = 50
    window_hold: int = 400               # window curriculum (window_at): first steps with w = seq_len,
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
        self.mix_divisors = tuple(int(d) for d in self.mix_divisors)
        for d in self.mix_divisors:
            if d < 2 or self.seq_len % d or self.pairs % d:
                raise ValueError(f"each of mix_divisors={self.mix_divisors} must be >= 2 and divide "
                                 f"seq_len={self.seq_len} and pairs={self.pairs} (the shorter "
                                 f"sequences get seq_len / d tokens and pairs / d pairs); got {d}")

    def model_config(self) -> ModelConfig:
        return ModelConfig(vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers,
                           n_heads=self.n_heads, attn=self.attn, window=self.window, form=self.form,
                           conv_kernel=self.conv_kernel, mlp=self.mlp)

    def lengths(self) -> list[Length]:
        """What one training step draws: ``seq_len`` itself, then for each d of ``mix_divisors``
        sequences d times shorter, with d times fewer pairs, the query start divided by d, and d
        times more of them (the same tokens and the same number of scored queries per length).
        Mixing short sequences with long ones keeps attention off the long plateau it sits on
        when trained on long sequences only (Zoology's issue #24)."""
        out = [Length(self.seq_len, self.pairs, self.query_start, self.batch_size)]
        for d in self.mix_divisors:
            out.append(Length(self.seq_len // d, self.pairs // d,
                              None if self.query_start is None else self.query_start // d,
                              self.batch_size * d))
        return out

    def batch(self, n: int, generator: torch.Generator, length: Length | None = None) -> TaskBatch:
        """``n`` sequences of the task at ``length`` (default: seq_len) drawn from ``generator``:
        int64 ``[n, length.seq_len]`` tensors on the CPU."""
        L = length or Length(self.seq_len, self.pairs, self.query_start, n)
        return make_batch(self.task, n, seq_len=L.seq_len, vocab_size=self.vocab_size,
                          generator=generator, num_pairs=L.pairs, query_start=L.query_start,
                          gap_power=self.gap_power)


@dataclass(frozen=True)
class Length:
    """One sequence length of a training step: ``batch`` sequences of ``seq_len`` tokens with
    ``pairs`` pairs and queries from ``query_start``."""

    seq_len: int
    pairs: int
    query_start: int | None
    batch: int


# The longer GPU run (python -m dma_ref.lab.train --compare --preset gpu ...): the CPU recipe at
# four times the length, N = 1024 with 64 pairs (P = N/16 as on the CPU), queries from 512, w = 64,
# width 128; trained beside N = 256 and 512 (mix_divisors). Two sliding-window layers with the
# short convolution reach 2 (w - 1 + 3) = 132 positions back, and the pairs end at 127, so no
# query is within SWA's reach; DMA keeps 64 of up to 1024 keys per query.
GPU_PRESET = {"seq_len": 1024, "pairs": 64, "query_start": 512, "window": 64, "d_model": 128,
              "batch_size": 64, "steps": 1500, "window_hold": 600, "window_anneal": 300,
              "eval_every": 100, "eval_size": 256}
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
    """The training batches: ``cfg.data_streams`` seeded generators, each yielding a 1 /
    data_streams share of every length of ``cfg.lengths()`` per step.

    ``streams``: the streams this process draws (default all of them, as a single process does;
    rank r of a data-parallel run draws only ``[r]``). ``next()`` returns one ``TaskBatch`` per
    length (``cfg.lengths()`` order), each the streams' sub-batches concatenated in stream order,
    on the CPU. With one stream and no mix this is exactly ``[cfg.batch(batch_size, g)]`` with
    ``g`` seeded by ``cfg.seed``.
    """

    def __init__(self, cfg: TrainConfig, streams: Sequence[int] | None = None):
        if cfg.batch_size % cfg.data_streams:     # then every mixed length's batch divides too
            raise ValueError(f"batch_size={cfg.batch_size} must be divisible by "
                             f"data_streams={cfg.data_streams} (each stream yields an equal share)")
        self.lengths = cfg.lengths()
        self.cfg = cfg
        self.streams = list(range(cfg.data_streams) if streams is None else streams)
        self.generators = [torch.Generator().manual_seed(stream_seed(cfg.seed, r))
                           for r in self.streams]

    def next(self) -> list[TaskBatch]:
        out = []
        for L in self.lengths:
            parts = [self.cfg.batch(L.batch // self.cfg.data_streams, g, L) for g in self.generators]
            out.append(parts[0] if len(parts) == 1 else
                       TaskBatch(*(torch.cat([getattr(p, f) for p in parts])
                                   for f in ("inputs", "targets", "roles"))))
        return out


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
