"""A training step's attention captured in CUDA graphs: ``graphed_attention``.

Below ~64K positions an eager ``dma_attention`` call costs more host time (Python, the plan's and
the kernels' launches) than GPU time, so the GPU waits (figures/bench/PERF_NOTES.md). Replaying
the forward and the backward from CUDA graphs removes that: ``torch.cuda.make_graphed_callables``
captures both around this function's fixed shapes, and autograd calls the captured backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .op import dma_attention

__all__ = ["graphed_attention"]


def graphed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                      window: int, **options) -> Callable[..., torch.Tensor]:
    """``f(q, k, v, s) -> o``, equal to ``dma_attention(q, k, v, s, window, **options)``, with
    its forward and backward captured in CUDA graphs for the shapes, dtypes and
    ``requires_grad`` flags of these sample tensors (q ``[B, Hq, Q, D]``, k, v ``[B, Hkv, K,
    D]``, s ``[B, Hkv, K]`` on CUDA; their values do not matter). Capturing runs the call a few
    times first (autotuning happens then). Each call of ``f`` copies its inputs into the graph's
    buffers and replays; the returned o and the gradients are the graph's own tensors, overwritten
    by the next replay. Use it where the same shapes recur, e.g. every step of training::

        attn = graphed_attention(q, k, v, s, w)      # once
        o = attn(q, k, v, s); loss(o).backward()       # every step: no Python inside the kernels
    """
    if q.device.type != "cuda":
        raise ValueError(f"graphed_attention needs CUDA tensors; q is on {q.device}")
    samples = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in (q, k, v, s))

    def attention(q, k, v, s):
        return dma_attention(q, k, v, s, window, **options)

    return torch.cuda.make_graphed_callables(attention, samples)
