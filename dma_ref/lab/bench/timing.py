"""How the benchmark times: medians of CUDA-event timings, L2 flushed; CUDA-graph replays.

``Timer`` rather than ``triton.testing.do_bench`` (which the scripts use): the benchmark must own
the 256 MiB flush buffer (allocated before any method, so that no method's peak memory counts
it) and scale the repetitions to a time budget per measurement.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timer:
    """Median of CUDA-event timings, L2 flushed before each repetition (like do_bench).
    ``flush``: the flush buffer; ``run`` allocates it before measuring anything."""

    rep_ms: float = 150.0
    min_reps: int = 3
    max_reps: int = 100
    flush: torch.Tensor | None = None

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.flush is None:
            self.flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
        fn()                                          # warm-up: compilation, autotuning
        torch.cuda.synchronize()
        est = self._once(fn)
        n = int(min(self.max_reps, max(self.min_reps, self.rep_ms / max(est, 1e-3))))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for a, b in zip(starts, ends):
            self.flush.zero_()
            a.record()
            fn()
            b.record()
        torch.cuda.synchronize()
        return statistics.median(a.elapsed_time(b) for a, b in zip(starts, ends))

    def _once(self, fn: Callable[[], object]) -> float:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.flush.zero_()
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b)


def host_ms(fn: Callable[[], object]) -> float:
    """Wall time of one call (host clock after a synchronize), for one-off builds."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def graphed(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` captured once in a CUDA graph (after two warm-up calls on a side stream, which
    compile and autotune); returns the replay. Used by the benchmark and scripts/profile_*.py."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay
