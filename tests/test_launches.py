"""Host work of the Triton path: how many GPU launches and host syncs one call costs.

At N = 16K the mask builder was bound by launches, not by the GPU (figures/bench/PERF_NOTES.md:
~25 small torch ops at ~20 us each). These tests count, on any device, the torch operators that
launch a kernel (views and allocations excluded) and the Triton launches of ``build_plan`` and
of ``dma_attention``'s forward, with the Triton kernels replaced by counters, so that a change
that brings the small ops back fails here rather than only in a GPU profile.
"""

from __future__ import annotations

from collections import Counter

import dma_ref.kernels.backward as backward_mod
import dma_ref.kernels.forward as forward_mod
import dma_ref.kernels.plan as plan_mod
import dma_ref.kernels.ranks as ranks_mod
import dma_ref.kernels.reduce as reduce_mod
import pytest
import torch
from dma_ref.kernels import build_plan, dma_attention
from torch.utils._python_dispatch import TorchDispatchMode

# Operators that launch nothing: views, metadata and allocations.
NO_LAUNCH = {"view", "_unsafe_view", "expand", "transpose", "t", "as_strided", "detach", "slice",
             "select", "unsqueeze", "squeeze", "alias", "permute", "reshape", "_reshape_alias",
             "lift_fresh", "empty", "empty_like", "empty_strided", "new_empty"}
HOST_SYNC = {"_local_scalar_dense", "item", "nonzero"}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class CountOps(TorchDispatchMode):
    """Counts the torch operators that launch a kernel."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NO_LAUNCH:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def triton_launches(monkeypatch):
    """Replace every Triton kernel of the forward and backward by a counter of its launches."""
    launches = Counter()

    class Fake:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches[self.name] += 1
            return launch

    for module, name in [(ranks_mod, "ranks_kernel"), (ranks_mod, "count_ranks_kernel"),
                         (ranks_mod, "thresholds_kernel"),
                         (ranks_mod, "lifetimes_kernel"), (plan_mod, "block_lists_kernel"),
                         (plan_mod, "plan_kernel"),
                         (forward_mod, "dma_fwd_kernel"), (backward_mod, "dma_bwd_kernel"),
                         (reduce_mod, "reduce_partials_kernel")]:
        monkeypatch.setattr(module, name, Fake(name))
    return launches


def inputs(N=300, D=16, dtype=torch.float32):
    q = torch.randn(1, 4, N, D, device=DEVICE, dtype=dtype)
    k, v = (torch.randn(1, 2, N, D, device=DEVICE, dtype=dtype) for _ in range(2))
    s = torch.rand(1, 2, N, device=DEVICE) * 5
    return q, k, v, s


@pytest.mark.parametrize("count", [True, False], ids=["count-ranks", "sort"])
def test_build_plan_is_three_kernels_and_at_most_a_sort(triton_launches, monkeypatch, count):
    _, _, _, s = inputs()
    if not count:                             # the sort path, as from K > COUNT_RANKS_MAX
        monkeypatch.setattr(ranks_mod, "COUNT_RANKS_MAX", 299)
    with CountOps() as mode:
        plan = build_plan(s, 32, 300, block_q=32)
    assert not plan.dense
    # counted ranks: no torch op at all; else one sort (key order, read backwards by
    # ranks_kernel); no host sync.
    assert sum(mode.ops.values()) <= (0 if count else 1), dict(mode.ops)
    assert not HOST_SYNC & set(mode.ops), dict(mode.ops)
    # ranks, thresholds, then the lifetimes and the key lists in one launch
    ranks = "count_ranks_kernel" if count else "ranks_kernel"
    assert triton_launches == Counter({ranks: 1, "thresholds_kernel": 1, "plan_kernel": 1})


@pytest.mark.parametrize("check_values", [True, False])
@pytest.mark.parametrize("s_dtype", [torch.float32, torch.bfloat16])
def test_forward_adds_one_kernel_and_an_optional_check(triton_launches, s_dtype, check_values):
    q, k, v, s = inputs()
    s = s.to(s_dtype)
    with CountOps() as mode:
        dma_attention(q, k, v, s, 32, check_values=check_values)
    syncs = sum(n for op, n in mode.ops.items() if op in HOST_SYNC)
    # The NaN / +inf check of s (the CPU default; off on CUDA), nothing else: without it the
    # forward never waits for the GPU (CUDA graphs can capture it).
    assert syncs == int(check_values), dict(mode.ops)
    # s's fp32 copy for the kernel (bf16 scores) and the check's reduction (the plan's ranks
    # are counted by a kernel at this K: no sort).
    budget = int(s_dtype != torch.float32) + int(check_values)
    assert sum(mode.ops.values()) - syncs <= budget, dict(mode.ops)
    assert triton_launches["dma_fwd_kernel"] == 1


def test_backward_is_the_buffers_the_casts_and_one_kernel(triton_launches):
    q, k, v, s = (t.to(torch.bfloat16).requires_grad_() for t in inputs())
    o = dma_attention(q, k, v, s, 32)
    do = torch.randn_like(o)
    with CountOps() as mode:
        torch.autograd.grad(o, (q, k, v, s), do)
    # s's fp32 copy for the kernel, zero-filled fp32 dk, dv, ds for the atomics, then their
    # casts to bf16: Delta = rowsum(dO O) is computed in the kernel, and lse's unused gradient
    # is never materialised.
    assert sum(mode.ops.values()) <= 7, dict(mode.ops)
    assert not HOST_SYNC & set(mode.ops), dict(mode.ops)
    assert triton_launches["dma_bwd_kernel"] == 1


# Operators whose output size depends on values: the host waits for the GPU to learn it.
SIZE_FROM_VALUES = {"nonzero", "bincount", "unique", "_unique2", "unique_consecutive",
                    "masked_select"}


class FindSyncs(TorchDispatchMode):
    """The operators that make the host wait for the GPU: scalar reads, and sizes that depend on
    values (``SIZE_FROM_VALUES``, boolean indexing)."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_SYNC or name in SIZE_FROM_VALUES:
            self.found.append(name)
        if name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool
                for i in (args[1] if len(args) > 1 else ())):
            self.found.append(f"{name} with a boolean mask")
        return func(*args, **(kwargs or {}))


def test_deterministic_backward_never_waits_for_the_gpu(triton_launches):
    """deterministic=True: fixed-size buffers and a fixed-size reduction (capturable in a CUDA
    graph like the atomic path)."""
    q, k, v, s = (t.requires_grad_() for t in inputs())
    o = dma_attention(q, k, v, s, 32, deterministic=True, check_values=False)
    do = torch.randn_like(o)
    with FindSyncs() as mode:
        torch.autograd.grad(o, (q, k, v, s), do)
    assert not mode.found, mode.found
    assert triton_launches["dma_bwd_kernel"] == 1
    assert triton_launches["reduce_partials_kernel"] == 1
