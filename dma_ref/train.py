"""Train tiny MHA / sliding-window / DMA language models on MQAR, and compare them.

    python -m dma_ref.train --task mqar --attn dma --seq-len 64 --pairs 4 --window 16 \
        --query-start 40 --steps 700 --seed 0 --out /tmp/mqar_dma
    python -m dma_ref.train --compare --out figures/mqar --checkpoint dma_ref/data/mqar_dma.pt
                                      # mha, swa and dma with the defaults below (~6 min, 2 cores)
    python -m dma_ref.train --compare --preset gpu --device cuda --out figures/mqar \
        --results-name results_gpu.json  # GPU_PRESET, bf16 autocast, Triton DMA backend
    bash scripts/gpu_mqar.sh          # the same on a GPU machine without installing the package

Data-parallel over the GPUs (or CPU processes) of one host, through torch.distributed and
DistributedDataParallel (NCCL on CUDA, gloo on the CPU; ``dma_ref.distributed``)::

    torchrun --nproc_per_node=2 -m dma_ref.train --compare --preset gpu --device cuda \
        --out figures/mqar --results-name results_gpu_ddp2.json

``--batch-size`` stays the global batch: each of the W processes trains on batch_size / W
sequences per step (it must divide), and gradients are averaged over them. Rank 0 alone writes
the results and checkpoints and shows the progress bar; the other ranks print nothing.

Training data is drawn fresh at every step from ``data_streams`` generators (default 1, set to W
under torchrun): stream r is seeded with ``stream_seed(seed, r)`` (stream 0 with ``seed`` itself)
and yields batch_size / data_streams sequences per step. A single process draws every stream and
concatenates the sub-batches in stream order; under torchrun rank r draws stream r. So one
process with ``--data-streams 2`` and two ranks train on the same global batches, and their losses
agree up to the order of float reductions (tests/test_train_ddp.py). The held-out set comes from
``seed + 10_000`` (another stream, never trained on). Accuracy is the fraction of query positions
(targets != -100) whose argmax prediction is the right value; under torchrun each rank scores a
1/W share of the held-out set and the counts are summed.

Outputs of one run (``--out DIR``): ``DIR/result.json`` (config, accuracy curve, loss curve, final
accuracy, wall time, tokens/s, attention share) and ``DIR/model.pt`` (state dict + config).
``--compare`` writes ``DIR/results.json`` as ``{"config": {...}, "accuracy": {"mha": a, "swa": b,
"dma": c}}``, ``DIR/curves.json`` (the curves, and per model the wall seconds, steps run,
tokens/s and the share of step time spent in attention) and the figure ``DIR/comparison.png``;
``--checkpoint PATH`` also saves the trained DMA model. The curves and the figure take the suffix
of ``--results-name``: ``results_gpu.json`` goes with ``curves_gpu.json`` and ``comparison_gpu.png``,
``results_gpu_ddp2.json`` with ``curves_gpu_ddp2.json`` and ``comparison_gpu_ddp2.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from .distributed import DistContext, init_distributed, shutdown, world_size_from_env
from .model import ModelConfig, TinyLM, save_checkpoint
from .tasks import IGNORE, TaskBatch, make_batch

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
    dma_lr_mult: float = 10.0            # Delta and A learn this much faster (see train())
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
        return make_batch(self.task, n, seq_len=self.seq_len, vocab_size=self.vocab_size,
                          generator=generator, num_pairs=self.pairs, query_start=self.query_start)


# The longer GPU run (python -m dma_ref.train --compare --preset gpu ...): N = 128 (twice the CPU
# run), 4 pairs, w = 32 (N/4, as on the CPU), batch 128. Two sliding-window layers reach
# 2 (w - 1) = 62 positions back and the pairs end at 7, so queries from position 70 on are out of
# SWA's reach (they sit at >= 80); DMA keeps 32 of up to 128 keys per query.
# Why not longer: MHA runs on one H200 (torch 2.11, bf16 autocast, lr 1e-3) learned the task
# after ~500 steps at N = 128 (batch 64, queries >= 64; also in fp32), after ~3700 at N = 256
# (batch 128, 4 pairs, queries >= 160), while at N = 512 (batch 128 or 256, 4 or 8 pairs, bf16
# or fp32) they were still at chance after 500-1300 steps; lr 3e-3 kept even N = 128 at chance
# (CPU). DMA must hold w = N about as long as MHA's plateau lasts, and at N = 512, batch 128 it
# trained at ~16 steps/s against MHA's ~46: at N = 256 its ~5500 steps alone would take most of
# the ~7 minutes.
# Here: hold 1000 steps (twice MHA's plateau), anneal over 500, then 1000 at w. On the CPU (fp32,
# naive backend, batch 64, hold 600, anneal 300, 1500 steps) DMA learned this task to 0.98.
# Measured on one H200 (2026-12-03, figures/mqar/results_gpu.json): MHA 1.000 in 30 s, SWA 0.039
# in 32 s, DMA 0.996 in 82 s (~55 steps/s when steady; its progress bar stalls 4-10 s at step 1
# and four times during the window anneal, ~30 s in all, where the kernels meet new variants to
# compile and tune: w < N (the e_j test), the first no-grad evaluation, w < N/2 (key lists), the
# next evaluation; not profiled). At N = 1024 (queries >= 960) the same recipe left
# MHA and DMA on a plateau at 0.31 (batch 32 x 2500 steps, and batch 128 x 1500 with hold 600 and
# anneal 300: figures/mqar/gpu_n1024/), SWA at 0.04.
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
        self.generators = [torch.Generator().manual_seed(stream_seed(cfg.seed, r)) for r in self.streams]

    def next(self) -> TaskBatch:
        parts = [self.cfg.batch(self.per_stream, g) for g in self.generators]
        if len(parts) == 1:
            return parts[0]
        return TaskBatch(*(torch.cat([getattr(p, f) for p in parts])
                           for f in ("inputs", "targets", "roles")))


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


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return (torch.autocast(device.type, dtype=dtype) if dtype is not None
            else contextlib.nullcontext())


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over positions whose target is not ``IGNORE``: logits ``[B, N, V]``, targets ``[B, N]``."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def accuracy_counts(model: torch.nn.Module, batch: TaskBatch, chunk: int = 128) -> torch.Tensor:
    """``int64 [2]`` on the batch's device: (right, scored) over the query positions (targets !=
    IGNORE) of ``batch`` ``[B, N]``, right meaning argmax of the logits = target. Counts, not a
    ratio, so that data-parallel ranks can sum them; no host sync inside the loop."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(2, dtype=torch.int64, device=batch.inputs.device)
    for i in range(0, batch.inputs.shape[0], chunk):
        x, y = batch.inputs[i:i + chunk], batch.targets[i:i + chunk]
        pred = model(x).argmax(-1)
        scored = y != IGNORE
        counts[0] += ((pred == y) & scored).sum()
        counts[1] += scored.sum()
    model.train(was_training)
    return counts


def accuracy(model: torch.nn.Module, batch: TaskBatch, chunk: int = 128) -> float:
    """Fraction of query positions (targets != IGNORE) predicted right by argmax."""
    right, total = accuracy_counts(model, batch, chunk).tolist()
    return right / max(total, 1)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to 10% of ``lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def window_at(step: int, cfg: TrainConfig) -> int:
    """The training window at ``step``: ``seq_len`` for the first ``window_hold`` steps, then
    linear down to ``window`` over ``window_anneal`` steps, then ``window``.

    A window curriculum, applied identically to SWA and DMA (MHA has no window). Why DMA needs
    it: a key that is not kept gets no gradient through its score, so a head whose random initial
    scores rank the pair tokens low never learns to keep them (we measured it: without the
    curriculum the last layer keeps ~1% of the pair values at the queries and accuracy stays at
    chance). With every key kept, the model first learns the recall circuit and the score bias
    learns which keys matter; then the budget tightens. The selection rule never changes, and the
    final evaluation uses ``window``.
    """
    if step < cfg.window_hold:
        return cfg.seq_len
    t = step - cfg.window_hold
    if t >= cfg.window_anneal:
        return cfg.window
    return round(cfg.seq_len + (cfg.window - cfg.seq_len) * t / cfg.window_anneal)


def set_window(model: TinyLM, window: int) -> None:
    """Set the attention window of every layer (no effect on MHA)."""
    for block in model.blocks:
        block.attn.window = window


ATTENTION_SHARE_METHOD = (
    "wall clock (time.perf_counter{sync}) on the sampled steps (step % {every} == {offset}): the "
    "attention core of every layer (attn.attend: SDPA, or DMA's mask construction + kernel), "
    "forward (around the call) plus backward (from the gradient of its output to the gradients of "
    "its q, k, v, s inputs, via tensor hooks), divided by the whole step (forward, loss, backward, "
    "clipping, optimizer); the other steps run unmeasured{unsync}")


class AttentionTimer:
    """The share of training time spent in attention, measured on a sample of steps.

    Every ``every``-th step (``step % every == every // 2``: never step 0, which compiles the
    kernels) is timed as a whole, and so is each layer's ``attn.attend`` (forward and backward),
    by wrapping that method on the instances. Marks are ``time.perf_counter()`` readings; on
    CUDA each mark first synchronises the device, so a region is charged with its launches, its
    GPU work and any host synchronisation inside it. (CUDA events alone would misattribute time
    when the host is the bottleneck or a region syncs: the GPU's idle gaps then land in whichever
    region comes next.) The sampled steps lose their CPU/GPU overlap, so they are slower than
    the others, but only one step in ``every`` is affected. Call :meth:`remove` to unwrap.
    """

    def __init__(self, model: TinyLM, device: torch.device, every: int = 50):
        self.device = device
        self.cuda = device.type == "cuda"
        self.every = every
        self.active = False
        self.steps: list[list] = []         # [start, end] of each timed step (seconds)
        self.spans: list[list] = []         # [start, end] of each attention forward or backward
        self.attns = [block.attn for block in model.blocks] if every > 0 else []
        for attn in self.attns:
            attn.attend = self._wrap(type(attn).attend.__get__(attn))

    def _mark(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _wrap(self, attend):
        def timed_attend(q, k, v, s=None):
            if not (self.active and torch.is_grad_enabled()):
                return attend(q, k, v, s)
            # Fresh views: their gradients are complete right after the attention backward
            # (v itself also receives the gradient of the scores, computed later).
            ins = [t.view_as(t) if t is not None and t.requires_grad else t for t in (q, k, v, s)]
            fwd = [self._mark(), None]
            o = attend(*ins)
            fwd[1] = self._mark()
            self.spans.append(fwd)
            if o.requires_grad:
                bwd: list = [None, None]
                self.spans.append(bwd)

                def started(_grad):
                    bwd[0] = self._mark()

                def finished(_grad):                # the last input hook to fire marks the end
                    bwd[1] = self._mark()

                o.register_hook(started)
                for t in ins:
                    if t is not None and t.requires_grad:
                        t.register_hook(finished)
            return o
        return timed_attend

    def begin_step(self, step: int) -> None:
        """Start timing ``step`` if it is a sampled one."""
        self.active = self.every > 0 and step % self.every == self.every // 2
        if self.active:
            self.steps.append([self._mark(), None])

    def end_step(self) -> None:
        if self.active:
            self.steps[-1][1] = self._mark()
            self.active = False

    def share(self) -> tuple[float | None, int]:
        """``(attention time / step time over the sampled steps, number of sampled steps)``;
        ``(None, 0)`` when no step was sampled."""
        steps = [m for m in self.steps if m[1] is not None]
        if not steps:
            return None, 0
        step_time = sum(b - a for a, b in steps)
        attn_time = sum(b - a for a, b in self.spans if a is not None and b is not None)
        return attn_time / step_time, len(steps)

    def method(self) -> str:
        return ATTENTION_SHARE_METHOD.format(
            every=self.every, offset=self.every // 2,
            sync=" after torch.cuda.synchronize() at every mark" if self.cuda else "",
            unsync=", without synchronisation" if self.cuda else "")

    def remove(self) -> None:
        """Restore the attention modules' own ``attend``."""
        for attn in self.attns:
            del attn.attend
        self.attns = []


def train(cfg: TrainConfig, device: torch.device | str = "cpu", *, progress: bool = True,
          max_seconds: float | None = None, dist: DistContext | None = None,
          time_every: int = 50) -> dict:
    """Train one model. Returns ``{"config", "curve": [[step, acc], ...], "loss_curve": [[step,
    loss], ...], "accuracy", "loss", "seconds", "steps_run", "tokens_per_s", "attention_share",
    "attention_share_method", "precision", "world_size", "params", "model"}`` (``model`` is the
    trained ``TinyLM``; the curves have one point per evaluation).

    ``max_seconds`` stops early (the notebooks' "a few seconds of live training"; data-parallel
    ranks agree on the stop every 10 steps). ``dist``: this process's place in a data-parallel
    run (``dma_ref.distributed.init_distributed``; its device replaces ``device``); None: one
    process. ``time_every``: every how many steps the attention share is sampled (0: never).
    ``loss`` is the training loss of the last step, averaged over the global batch.
    """
    ctx = dist if dist is not None else DistContext(device=torch.device(device))
    device = ctx.device
    check_parallel(cfg, ctx.world_size)
    data = DataStreams(cfg, [ctx.rank] if ctx.distributed else None)
    torch.manual_seed(cfg.seed)                              # model init, the same on every rank
    model = TinyLM(cfg.model_config(), device=device)
    # Three groups: matrices (weight decay), norms and embeddings-free vectors (no decay), and
    # DMA's Delta and A (no decay, lr x dma_lr_mult: their gradient only arrives through the
    # few kept keys, so at the default lr the selection barely moves in a short run).
    groups: dict[str, list] = {"decay": [], "other": [], "dma": []}
    for n, p in model.named_parameters():
        kind = "dma" if n.endswith((".delta", ".A")) else "decay" if p.dim() == 2 else "other"
        groups[kind].append(p)
    opt = torch.optim.AdamW([{"params": groups["decay"], "weight_decay": cfg.weight_decay, "mult": 1.0},
                             {"params": groups["other"], "weight_decay": 0.0, "mult": 1.0},
                             {"params": groups["dma"], "weight_decay": 0.0, "mult": cfg.dma_lr_mult}],
                            lr=cfg.lr, betas=(0.9, 0.98))
    net: torch.nn.Module = model
    if ctx.distributed:
        # DDP broadcasts rank 0's parameters (identical anyway: same seed) and averages the
        # gradients during backward (TinyLM has no buffers to keep in sync).
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    # Every rank draws the whole held-out set (cheap) and scores its 1/W share of the rows.
    held_out = cfg.batch(cfg.eval_size, torch.Generator().manual_seed(cfg.seed + HELD_OUT_SEED_OFFSET))
    held_out = TaskBatch(*(t[ctx.rank::ctx.world_size] for t in
                           (held_out.inputs, held_out.targets, held_out.roles))).to(device)
    amp = autocast_dtype(cfg, device)
    timer = AttentionTimer(model, device, time_every)
    tokens_per_step = cfg.batch_size * cfg.seq_len           # global: all ranks together
    curve: list[list[float]] = []
    loss_curve: list[list[float]] = []
    postfix: dict[str, str] = {}
    t0 = time.perf_counter()
    bar = _progress_bar(range(cfg.steps), cfg.attn, progress and ctx.is_main)
    loss = float("nan")
    step = -1
    try:
        for step in bar:
            timer.begin_step(step)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg) * group["mult"]
            set_window(model, window_at(step, cfg))
            inputs, targets = _to_device(data.next(), device)
            with _autocast(device, amp):
                logits = net(inputs)
            loss_t = lm_loss(logits, targets)
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            # After backward the gradients are all-reduced, so the clipped norm is the same on
            # every rank and the ranks stay identical.
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            timer.end_step()
            last = step == cfg.steps - 1 or _out_of_time(ctx, step, t0, max_seconds)
            if last:
                set_window(model, cfg.window)        # the final model always uses the target window
            if (step + 1) % cfg.eval_every == 0 or last:
                # Collectives, at the same steps on every rank. The loss is each rank's mean
                # over its sequences; MQAR and niah score the same number of positions in every
                # sequence, so the mean of the ranks' means is the global batch's mean.
                with _autocast(device, amp):
                    counts = ctx.all_reduce_sum(accuracy_counts(model, held_out))
                loss_sum = ctx.all_reduce_sum(loss_t.detach().float().reshape(1).clone())
                right, total = counts.tolist()
                acc, loss = right / max(total, 1), loss_sum.item() / ctx.world_size
                curve.append([step + 1, acc])
                loss_curve.append([step + 1, loss])
                rate = (step + 1) * tokens_per_step / (time.perf_counter() - t0)
                postfix.update(loss=f"{loss:.3f}", acc=f"{acc:.3f}", tok_s=f"{rate:.3g}")
                bar.set_postfix(postfix)
            elif time_every and step and step % time_every == 0:
                # Throughput between evaluations, from the host clock (no sync: on CUDA it runs
                # a little ahead of the GPU; the evaluations resynchronise it).
                rate = (step + 1) * tokens_per_step / (time.perf_counter() - t0)
                postfix["tok_s"] = f"{rate:.3g}"
                bar.set_postfix(postfix, refresh=False)
            if last:
                break
    finally:
        timer.remove()
    seconds = time.perf_counter() - t0
    share, sampled = timer.share()
    steps_run = step + 1
    return {"config": asdict(cfg), "curve": curve, "loss_curve": loss_curve, "accuracy": curve[-1][1],
            "loss": loss, "seconds": seconds, "steps_run": steps_run,
            "tokens_per_s": steps_run * tokens_per_step / seconds,
            "attention_share": share, "attention_share_steps": sampled,
            "attention_share_method": timer.method(),
            "precision": "bf16 autocast" if amp is not None else "fp32",
            "world_size": ctx.world_size, "params": model.num_params(), "model": model}


def _progress_bar(it, desc: str, show: bool):
    """A tqdm bar over ``it`` (refreshed at most once a second); silent when ``show`` is false."""
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, disable=not show, mininterval=1.0)


def _to_device(batch: TaskBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` on ``device``. On CUDA through pinned memory and non-blocking
    copies: a plain ``.to("cuda")`` of pageable memory waits for the GPU to finish all queued
    work, which would stop the host from preparing the next step while the GPU runs this one."""
    if device.type != "cuda":
        return batch.inputs.to(device), batch.targets.to(device)
    return tuple(t.pin_memory().to(device, non_blocking=True) for t in (batch.inputs, batch.targets))


# Under DDP the ranks must stop at the same step (every later step is a collective): the clock
# is compared on every rank but the decision is all-reduced (max), only every STOP_CHECK_EVERY
# steps so that it costs no per-step synchronisation.
STOP_CHECK_EVERY = 10


def _out_of_time(ctx: DistContext, step: int, t0: float, max_seconds: float | None) -> bool:
    if max_seconds is None:
        return False
    late = time.perf_counter() - t0 > max_seconds
    if not ctx.distributed:
        return late
    if (step + 1) % STOP_CHECK_EVERY:
        return False
    flag = ctx.all_reduce_sum(torch.tensor([int(late)], device=ctx.device))
    return bool(flag.item())


def save_run(result: dict, out: Path) -> None:
    """``out/result.json`` (everything but the model) and ``out/model.pt``."""
    out.mkdir(parents=True, exist_ok=True)
    record = {k: v for k, v in result.items() if k != "model"}
    (out / "result.json").write_text(json.dumps(record, indent=1) + "\n")
    save_checkpoint(result["model"], out / "model.pt", extra={"train_config": result["config"]})


# Per-model measurements that --compare writes to curves*.json next to the curves.
RUN_METRICS = ("seconds", "steps_run", "tokens_per_s", "attention_share", "attention_share_steps")


def run_comparison(cfg: TrainConfig, out: Path | str | None = None, device: torch.device | str = "cpu",
                   *, progress: bool = True, attns=("mha", "swa", "dma"), checkpoint: Path | str | None = None,
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
    first = next(iter(runs.values()))
    if out is not None and ctx.is_main:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        suffix = results_suffix(results_name)
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
        _save_comparison_figure(res, config, out / f"comparison{suffix}.png")
    if checkpoint is not None and "dma" in runs and ctx.is_main:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(runs["dma"]["model"], checkpoint,
                        extra={"train_config": runs["dma"]["config"], "accuracy": res["accuracy"]["dma"]})
    return res


def _save_comparison_figure(res: dict, config: dict, path: Path) -> None:
    """The comparison figure; skipped with a note where matplotlib is missing (the JSON
    records are written first and hold everything it shows)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"matplotlib is not installed: {path.name} not drawn", file=sys.stderr)
        return
    import matplotlib.pyplot as plt

    from .viz.learned import plot_comparison
    fig = plot_comparison(res["accuracy"], res["curves"], config)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def results_suffix(results_name: str) -> str:
    """The suffix that ties a comparison's files together: ``results_gpu_ddp2.json`` ->
    ``"_gpu_ddp2"`` (``curves_gpu_ddp2.json``, ``comparison_gpu_ddp2.png``); ``results.json`` -> ""."""
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

    rows = [f"{'model':<6}{'accuracy':>10}{'wall s':>9}{'steps':>7}{'tokens/s':>11}{'attn share':>12}"]
    for a, acc in results["accuracy"].items():
        rows.append(f"{a:<6}{acc:>10.3f}{metric('seconds', a, '.0f'):>9}{metric('steps_run', a, 'd'):>7}"
                    f"{metric('tokens_per_s', a, '.3g'):>11}{metric('attention_share', a, '.0%'):>12}")
    return "\n".join(rows)


def _given(argv: Sequence[str]) -> set[str]:
    """The long options present on the command line (``--x`` and ``--x=v`` both give ``--x``)."""
    return {a.split("=")[0] for a in argv if a.startswith("--")}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if f.name == "query_start":
            p.add_argument(flag, type=int, default=value, help="first query position (-1: right after the pairs)")
        elif f.name == "precision":
            p.add_argument(flag, choices=PRECISIONS, default=value,
                           help="auto: bf16 autocast on CUDA, fp32 on the CPU")
        elif f.name == "data_streams":
            p.add_argument(flag, type=int, default=value,
                           help="training-data streams (default 1; under torchrun: the world size)")
        else:
            p.add_argument(flag, type=type(value), default=value)
    p.add_argument("--compare", action="store_true", help="train mha, swa and dma with this config")
    p.add_argument("--preset", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: the configuration GPU_PRESET (explicit flags still win)")
    p.add_argument("--out", type=Path, default=None, help="output folder (e.g. figures/mqar)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="with --compare: save the DMA model here (e.g. dma_ref/data/mqar_dma.pt)")
    p.add_argument("--results-name", default="results.json",
                   help="with --compare: results.json (CPU) or results_gpu.json")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop each run after this long (--preset gpu: GPU_MAX_SECONDS)")
    args = p.parse_args(argv)
    given = _given(argv if argv is not None else sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    max_seconds = args.max_seconds
    if args.preset == "gpu":                   # the preset replaces defaults, not explicit flags
        kwargs.update({k: v for k, v in GPU_PRESET.items() if "--" + k.replace("_", "-") not in given})
        if "--max-seconds" not in given:
            max_seconds = GPU_MAX_SECONDS
    if kwargs["query_start"] is not None and kwargs["query_start"] < 0:
        kwargs["query_start"] = None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        import os
        os.environ.setdefault("TRITON_INTERPRET", "1")
    world = world_size_from_env()
    if world > 1 and "--data-streams" not in given:
        kwargs["data_streams"] = world         # rank r draws stream r (see DataStreams)
    cfg = TrainConfig(**kwargs)
    check_parallel(cfg, world)                 # before any process group exists: a clean error
    ctx = init_distributed(device)
    try:
        t0 = time.perf_counter()
        if args.compare:
            res = run_comparison(cfg, args.out, ctx.device, checkpoint=args.checkpoint,
                                 results_name=args.results_name, max_seconds=max_seconds,
                                 dist=ctx)
            summary = {m: res[m] for m in ("accuracy", "seconds", "steps_run", "tokens_per_s",
                                           "attention_share")}
        else:
            res = train(cfg, ctx.device, max_seconds=max_seconds, dist=ctx)
            if args.out is not None and ctx.is_main:
                save_run(res, args.out)
            summary = {"attn": cfg.attn, **{m: res[m] for m in ("accuracy", "seconds", "steps_run",
                                                                 "tokens_per_s", "attention_share")}}
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
