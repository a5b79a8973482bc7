"""The training loop of one model, its schedules, and the held-out accuracy.

Under torchrun the model is wrapped in DistributedDataParallel (gradients averaged over the W
ranks during backward); rank 0 alone shows the progress bar. Accuracy is the fraction of query
positions (targets != -100) whose argmax prediction is the right value; under torchrun each rank
scores a 1/W share of the held-out set and the counts are summed.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import asdict

import torch
import torch.nn.functional as F

from ...nn import TinyLM
from ..distributed import DistContext
from ..tasks import IGNORE, TaskBatch
from .config import DataStreams, TrainConfig, autocast_dtype, check_parallel, held_out_batch
from .guard import TrainingDiverged, diagnose, is_finite, last_good_state
from .timing import AttentionTimer

# Under DDP the ranks must stop at the same step (every later step is a collective): the clock
# is compared on every rank but the decision is all-reduced (max), only every STOP_CHECK_EVERY
# steps so that it costs no per-step synchronisation.
STOP_CHECK_EVERY = 10
NO_CAUSE = "non-finite loss or gradient norm; no layer's scores or projections were"
EXP_FORM_WARNING = ("form='exp' (the paper's s = exp(A softplus(x))) overflows float32 once A "
                    "softplus(x) > 88.7 and can turn training into NaN (the loop then stops with "
                    "TrainingDiverged); form='log' (s = A softplus(x)) ranks keys the same way and "
                    "is the stable default")


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over positions whose target is not ``IGNORE``: logits ``[B, N, V]``,
    targets int64 ``[B, N]``; a float32 scalar."""
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


def make_optimizer(model: TinyLM, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with three groups, each with a ``mult`` on the scheduled lr: matrices (weight
    decay), norms and other vectors (no decay), and DMA's Delta and A (no decay, lr x
    ``dma_lr_mult``: their gradient only arrives through the few kept keys, so at the default lr
    the selection barely moves in a short run)."""
    groups: dict[str, list] = {"decay": [], "other": [], "dma": []}
    for n, p in model.named_parameters():
        kind = "dma" if n.endswith((".delta", ".A")) else "decay" if p.dim() == 2 else "other"
        groups[kind].append(p)
    return torch.optim.AdamW(
        [{"params": groups["decay"], "weight_decay": cfg.weight_decay, "mult": 1.0},
         {"params": groups["other"], "weight_decay": 0.0, "mult": 1.0},
         {"params": groups["dma"], "weight_decay": 0.0, "mult": cfg.dma_lr_mult}],
        lr=cfg.lr, betas=(0.9, 0.98))


def train(cfg: TrainConfig, device: torch.device | str = "cpu", *, progress: bool = True,
          max_seconds: float | None = None, dist: DistContext | None = None,
          time_every: int = 50) -> dict:
    """Train one model. Returns ``{"config", "curve": [[step, acc], ...], "loss_curve": [[step,
    loss], ...], "accuracy", "loss", "seconds", "steps_run", "tokens_per_s", "attention_share",
    "attention_share_method", "precision", "world_size", "params", "model"}`` (``model`` is the
    trained ``TinyLM``; the curves have one point per evaluation).

    ``max_seconds`` stops early (the notebooks' "a few seconds of live training"; data-parallel
    ranks agree on the stop every 10 steps). ``dist``: this process's place in a data-parallel
    run (``dma_ref.lab.distributed.init_distributed``; its device replaces ``device``); None: one
    process. ``time_every``: every how many steps the attention share is sampled (0: never).
    ``loss`` is the training loss of the last step, averaged over the global batch.

    Raises :class:`~dma_ref.lab.train.guard.TrainingDiverged` at the first step whose loss or
    gradient is not finite, naming the step, the layer and the cause, with the weights of the
    last good step (the CLI saves them as ``last_good.pt``).
    """
    ctx = dist if dist is not None else DistContext(device=torch.device(device))
    device = ctx.device
    check_parallel(cfg, ctx.world_size)
    if cfg.attn == "dma" and cfg.form == "exp":
        warnings.warn(EXP_FORM_WARNING, stacklevel=2)
    data = DataStreams(cfg, [ctx.rank] if ctx.distributed else None)
    torch.manual_seed(cfg.seed)                              # model init, the same on every rank
    model = TinyLM(cfg.model_config(), device=device)
    opt = make_optimizer(model, cfg)
    net: torch.nn.Module = model
    if ctx.distributed:
        # DDP broadcasts rank 0's parameters (identical anyway: same seed) and averages the
        # gradients during backward (TinyLM has no buffers to keep in sync).
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    # Every rank draws the whole held-out set (cheap) and scores its 1/W share of the rows.
    held_out = held_out_batch(cfg)
    held_out = TaskBatch(*(t[ctx.rank::ctx.world_size] for t in
                           (held_out.inputs, held_out.targets, held_out.roles))).to(device)
    amp = autocast_dtype(cfg, device)
    timer = AttentionTimer(model, device, time_every)
    tokens_per_step = sum(L.batch * L.seq_len for L in cfg.lengths())   # global: all ranks
    curve: list[list[float]] = []
    loss_curve: list[list[float]] = []
    postfix: dict[str, str] = {}
    t0 = time.perf_counter()
    bar = progress_bar(range(cfg.steps), cfg.attn, progress and ctx.is_main)
    loss = float("nan")
    step = -1
    try:
        for step in bar:
            timer.begin_step(step)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg) * group["mult"]
            set_window(model, window_at(step, cfg))
            parts = data.next()
            scored = [int((b.targets != IGNORE).sum()) for b in parts]   # on the CPU: no sync
            batches = [to_device(b, device) for b in parts]
            opt.zero_grad(set_to_none=True)
            inputs = batches[0][0]
            try:
                loss_t = step_loss(net, batches, scored, device, amp)
            except ValueError as err:        # e.g. the naive path refusing +inf scores
                causes = diagnose(model, inputs)
                if not causes:
                    raise
                raise TrainingDiverged(step, causes, last_good_state(model),
                                       curve=curve, loss_curve=loss_curve) from err
            # After backward the gradients are all-reduced, so the clipped norm is the same on
            # every rank and the ranks stay identical.
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            # Before the update: a NaN step stops here with the last good weights intact (the
            # norm is all-reduced under DDP, so every rank stops at the same step).
            if not is_finite(loss_t, grad_norm):
                causes = diagnose(model, inputs) or [NO_CAUSE]
                raise TrainingDiverged(step, causes, last_good_state(model),
                                       curve=curve, loss_curve=loss_curve)
            opt.step()
            timer.end_step()
            last = step == cfg.steps - 1 or out_of_time(ctx, step, t0, max_seconds)
            if last:
                set_window(model, cfg.window)        # the final model always uses the target window
            if (step + 1) % cfg.eval_every == 0 or last:
                # Collectives, at the same steps on every rank. The loss is each rank's mean
                # over its sequences; MQAR and niah score the same number of positions in every
                # sequence, so the mean of the ranks' means is the global batch's mean.
                with autocast(device, amp):
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
    return {"config": asdict(cfg), "curve": curve, "loss_curve": loss_curve,
            "accuracy": curve[-1][1], "loss": loss, "seconds": seconds, "steps_run": steps_run,
            "tokens_per_s": steps_run * tokens_per_step / seconds,
            "attention_share": share, "attention_share_steps": sampled,
            "attention_share_method": timer.method(),
            "precision": "bf16 autocast" if amp is not None else "fp32",
            "world_size": ctx.world_size, "params": model.num_params(), "model": model}


def step_loss(net: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
              counts: list[int], device: torch.device, amp: torch.dtype | None) -> torch.Tensor:
    """The loss of one training step over sub-batches of different lengths (``[(inputs,
    targets)]``, int64 ``[B_i, N_i]``, with ``counts[i]`` scored positions), backpropagated one
    length at a time (one graph alive at a time): the mean over every scored position of them
    all, a float32 scalar (detached)."""
    total = max(sum(counts), 1)
    loss = torch.zeros((), device=device)
    for (inputs, targets), n in zip(batches, counts):
        with autocast(device, amp):
            logits = net(inputs)
        part = lm_loss(logits, targets) * (n / total)
        part.backward()
        loss += part.detach()
    return loss


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    return (torch.autocast(device.type, dtype=dtype) if dtype is not None
            else contextlib.nullcontext())


def progress_bar(it, desc: str, show: bool):
    """A tqdm bar over ``it`` (refreshed at most once a second); silent when ``show`` is false."""
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, disable=not show, mininterval=1.0)


def to_device(batch: TaskBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)``, int64 ``[B, N]``, on ``device``. On CUDA through pinned memory and
    non-blocking copies: a plain ``.to("cuda")`` of pageable memory waits for the GPU to finish
    all queued work, which would stop the host from preparing the next step while the GPU runs
    this one."""
    if device.type != "cuda":
        return batch.inputs.to(device), batch.targets.to(device)
    return tuple(t.pin_memory().to(device, non_blocking=True)
                 for t in (batch.inputs, batch.targets))


def out_of_time(ctx: DistContext, step: int, t0: float, max_seconds: float | None) -> bool:
    """Whether the run started at ``t0`` should stop after ``step`` (see STOP_CHECK_EVERY)."""
    if max_seconds is None:
        return False
    late = time.perf_counter() - t0 > max_seconds
    if not ctx.distributed:
        return late
    if (step + 1) % STOP_CHECK_EVERY:
        return False
    flag = ctx.all_reduce_sum(torch.tensor([int(late)], device=ctx.device))
    return bool(flag.item())
