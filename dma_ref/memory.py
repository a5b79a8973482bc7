"""Measured memory of the naive (materialised-mask) DMA, on any device including the CPU.

The CPU allocator keeps no peak statistics, so we measure two exact, deterministic quantities:

* **saved for backward**: the bytes of the distinct tensor storages that autograd keeps alive
  between the forward and the backward pass (``torch.autograd.graph.saved_tensors_hooks``). For
  naive DMA this includes the ``[B, Hq, Q, K]`` probabilities, so it grows like ``Q·K``.
* **largest intermediate**: the biggest tensor any single operator produced during the forward
  (a ``TorchDispatchMode`` sees every operator's outputs), e.g. the ``[B, Hkv, Q, K]`` sorted
  ranks of ``dma_mask`` or the ``[B, Hq, Q, K]`` logits.

On a GPU, ``torch.cuda.max_memory_allocated`` gives the true peak and ``naive_dma_memory``
reports it too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .naive import naive_dma_attention


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn()`` and return ``(output, bytes of distinct storages saved for backward)``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


class _LargestOutput(TorchDispatchMode):
    """Records the largest storage produced by any operator (views allocate nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if st.data_ptr() not in inputs:          # a fresh allocation, not a view or in-place
                    self.largest = max(self.largest, st.nbytes())
                    self.total += st.nbytes()
        return out


def largest_intermediate_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Run ``fn()``; return ``(output, largest single allocation, total bytes allocated)``."""
    mode = _LargestOutput()
    with mode:
        out = fn()
    return out, mode.largest, mode.total


def naive_dma_memory(N: int, *, B: int = 1, Hq: int = 2, Hkv: int = 1, D: int = 16,
                     window: int = 16, mode: str = "row", dtype: torch.dtype = torch.float32,
                     device: str | torch.device = "cpu", seed: int = 0) -> dict[str, int]:
    """Measure one forward of ``naive_dma_attention`` at sequence length N (Q = K = N).

    Returns ``{"N", "saved_bytes", "largest_bytes", "total_bytes", "input_bytes"}`` and, on CUDA,
    ``"cuda_peak_bytes"`` (peak allocated during forward + backward, inputs included).
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, N, D, generator=g, dtype=dtype).to(device).requires_grad_()
    k = torch.randn(B, Hkv, N, D, generator=g, dtype=dtype).to(device).requires_grad_()
    v = torch.randn(B, Hkv, N, D, generator=g, dtype=dtype).to(device).requires_grad_()
    s = torch.randn(B, Hkv, N, generator=g, dtype=dtype).to(device).requires_grad_()
    run = lambda: naive_dma_attention(q, k, v, s, window, mode=mode)
    _, saved = saved_tensor_bytes(run)
    with torch.no_grad():
        _, largest, total = largest_intermediate_bytes(run)
    result = {"N": N, "saved_bytes": saved, "largest_bytes": largest, "total_bytes": total,
              "input_bytes": sum(t.numel() * t.element_size() for t in (q, k, v, s))}
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        run().sum().backward()
        torch.cuda.synchronize()
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    return result


def quadratic_fit(N, y) -> tuple[float, float, float]:
    """Least-squares ``y ≈ a·N² + b·N + c``; returns ``(a, b, c)``."""
    import numpy as np
    a, b, c = np.polyfit(np.asarray(N, dtype=float), np.asarray(y, dtype=float), 2)
    return float(a), float(b), float(c)
