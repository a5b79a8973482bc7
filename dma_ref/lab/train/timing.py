"""The share of training time spent in attention, timed through module hooks on ``attn.core``.

Every attention module of ``dma_ref.nn`` (MHA, SWA, DMA) computes its output in a parameter-free
child module ``core`` (``attn.core(q, k, v, s) -> o``): SDPA, or DMA's mask construction and
kernel. The timer hooks that child; it never replaces a method, and ``remove()`` leaves the model
as it was.
"""

from __future__ import annotations

import time

import torch

from ...nn import TinyLM

ATTENTION_SHARE_METHOD = (
    "wall clock (time.perf_counter{sync}) on the sampled steps (step % {every} == {offset}): the "
    "attention core of every layer (attn.core: SDPA, or DMA's mask construction + kernel), "
    "forward (around the call) plus backward (from the gradient of its output to the gradients of "
    "its q, k, v, s inputs, via tensor hooks), divided by the whole step (forward, loss, backward, "
    "clipping, optimizer); the other steps run unmeasured{unsync}")


class AttentionTimer:
    """The share of training time spent in attention, measured on a sample of steps.

    Every ``every``-th step (``step % every == every // 2``: never step 0, which compiles the
    kernels) is timed as a whole, and so is each layer's ``attn.core`` (forward and backward),
    through a forward pre-hook and a forward hook on that module. Marks are
    ``time.perf_counter()`` readings; on CUDA each mark first synchronises the device, so a region
    is charged with its launches, its GPU work and any host synchronisation inside it. (CUDA
    events alone would misattribute time when the host is the bottleneck or a region syncs: the
    GPU's idle gaps then land in whichever region comes next.) The sampled steps lose their
    CPU/GPU overlap, so they are slower than the others, but only one step in ``every`` is
    affected. Unsampled steps run the hooks as no-ops. Call :meth:`remove` to take them off.
    """

    def __init__(self, model: TinyLM, device: torch.device, every: int = 50):
        self.device = device
        self.cuda = device.type == "cuda"
        self.every = every
        self.active = False
        self.steps: list[list] = []         # [start, end] of each timed step (seconds)
        self.spans: list[list] = []         # [start, end] of each attention forward or backward
        self.start: float | None = None     # start of the core forward in progress
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        if every > 0:
            for block in model.blocks:
                core = block.attn.core
                self.handles += [core.register_forward_pre_hook(self.before, with_kwargs=True),
                                 core.register_forward_hook(self.after, with_kwargs=True)]

    def mark(self) -> float:
        """``time.perf_counter()``, after the device has finished its queued work."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def before(self, module: torch.nn.Module, args: tuple, kwargs: dict):
        """Forward pre-hook: on a sampled step, replace the inputs that need a gradient by
        fresh views and start the clock. The views' gradients are complete right after the
        core's backward (v itself also receives the gradient of the scores, computed later)."""
        self.start = None
        if not (self.active and torch.is_grad_enabled()):
            return None
        args = tuple(marker(t) for t in args)
        kwargs = {k: marker(t) for k, t in kwargs.items()}
        self.start = self.mark()
        return args, kwargs

    def after(self, module: torch.nn.Module, args: tuple, kwargs: dict,
              output: torch.Tensor) -> None:
        """Forward hook: stop the forward clock; hook the backward of ``output`` (its start)
        and of the marked inputs (its end: the last input gradient to arrive)."""
        if self.start is None:
            return
        self.spans.append([self.start, self.mark()])
        self.start = None
        if not output.requires_grad:
            return
        bwd: list = [None, None]
        self.spans.append(bwd)

        def started(_grad):
            bwd[0] = self.mark()

        def finished(_grad):
            bwd[1] = self.mark()

        output.register_hook(started)
        for t in (*args, *kwargs.values()):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.register_hook(finished)

    def begin_step(self, step: int) -> None:
        """Start timing ``step`` if it is a sampled one."""
        self.active = self.every > 0 and step % self.every == self.every // 2
        if self.active:
            self.steps.append([self.mark(), None])

    def end_step(self) -> None:
        if self.active:
            self.steps[-1][1] = self.mark()
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
        """How the share was measured, in words (recorded next to it)."""
        return ATTENTION_SHARE_METHOD.format(
            every=self.every, offset=self.every // 2,
            sync=" after torch.cuda.synchronize() at every mark" if self.cuda else "",
            unsync=", without synchronisation" if self.cuda else "")

    def remove(self) -> None:
        """Take the hooks off the attention cores."""
        for handle in self.handles:
            handle.remove()
        self.handles = []


def marker(t):
    """A fresh view of ``t`` when it needs a gradient (a point to hook in the backward), else
    ``t`` itself (None, or a tensor that needs none)."""
    return t.view_as(t) if isinstance(t, torch.Tensor) and t.requires_grad else t
