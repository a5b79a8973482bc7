"""The CUDA launch path of the kernels (autotuning), driven through the Triton interpreter.

On CUDA, ``dma_attention`` launches its kernels through ``kernels.launch.Tuner``: candidates
with the head packing made concrete (GH or GH / 2, the grid a function of the chosen GH),
compiled in threads, timed, the backward's atomic buffers zeroed before every timed run. None
of that runs under the interpreter by default, so here the interpreter is told it is a GPU
(``interpreting`` patched to False) and the timer is replaced by a fake one that prefers a
chosen candidate. Results must equal the float64 reference whichever candidate wins, and the
timing runs must not leak into the gradients (a missing ``reset_to_zero`` would add them).
"""

from __future__ import annotations

import itertools

import pytest
import torch
import triton
from dma_ref.kernels import dma_attention, launch

from dma_ref import naive_dma_attention


@pytest.fixture
def tuned_path(monkeypatch):
    """The autotuned path with a fake clock; returns the candidates each tuner timed."""
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    monkeypatch.setattr(launch, "TUNERS", {})
    monkeypatch.setattr(launch, "FWD_TUNING", ((16, 4, 1, 1), (32, 4, 1, 2)))
    monkeypatch.setattr(launch, "BWD_TUNING", ((16, 4, 1, 1), (16, 4, 1, 2)))
    timed: dict[str, list] = {"fwd": [], "bwd": []}
    order = itertools.count()
    original = launch.tuner

    def tuned(name, kernel):
        tuner = original(name, kernel)

        def fake_bench(kernel_call, quantiles):
            kernel_call()                     # runs the candidate (and the reset hook) once
            kernel_call()
            timed[name].append(next(order))
            t = float(len(timed[name]))       # later candidates look faster: the last wins
            return [1.0 / t] * 3
        tuner._do_bench = fake_bench
        return tuner

    monkeypatch.setattr(launch, "tuner", tuned)
    return timed


@pytest.mark.parametrize("w", [9, 50])
def test_tuned_launch_equals_the_reference(tuned_path, w):
    torch.manual_seed(0)
    q = torch.randn(1, 4, 50, 16)
    k, v = torch.randn(1, 2, 50, 16), torch.randn(1, 2, 50, 16)
    s = torch.randn(1, 2, 50)
    cfg = launch.KernelConfig(rows=32)                   # block_n=None: the tuned path
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, s)]
    o = dma_attention(*leaves, w, fwd_config=cfg, bwd_config=cfg)
    do = torch.randn_like(o)
    grads = torch.autograd.grad(o, leaves, do)
    ref = [t.double().requires_grad_(True) for t in (q, k, v, s)]
    o_ref = naive_dma_attention(*ref, w)
    ref_grads = torch.autograd.grad(o_ref, ref, do.double())
    # Both candidates of each kernel were timed (GH = 2 and GH = 1 for G = 2 heads per KV head).
    assert len(tuned_path["fwd"]) == 2 and len(tuned_path["bwd"]) == 2
    torch.testing.assert_close(o.double(), o_ref, atol=2e-5, rtol=1e-4)
    for name, g, g_ref in zip(("dq", "dk", "dv", "ds"), grads, ref_grads):
        torch.testing.assert_close(g.double(), g_ref, atol=2e-5, rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")
    chosen = launch.TUNERS["fwd"].best_config.kwargs, launch.TUNERS["bwd"].best_config.kwargs
    assert chosen[0]["GH"] == 1 and chosen[1]["GH"] == 1      # the split candidates won


def test_prune_makes_the_head_packing_concrete_and_drops_what_cannot_fit():
    q = torch.empty(1, dtype=torch.bfloat16)
    cands = [triton.Config({"BLOCK_N": n, "SPLIT": sp}, num_warps=w, num_stages=s)
             for n, w, s, sp in ((64, 8, 3, 1), (64, 8, 3, 2), (128, 8, 2, 1), (32, 8, 1, 2))]
    fwd = launch.prune_configs(cands, {"Qp": q}, HEAD_DP=256, BLOCK_Q=32, GH_MAX=4)
    # D = 256 bf16: 3 stages of 64 keys need 2 x 64 x 256 x 2 x 3 = 192 KB for K and V, plus
    # 64 or 32 KB for q: over the shared memory (on the H200 such a tile failed to launch).
    assert [(c.kwargs["BLOCK_N"], c.kwargs["GH"]) for c in fwd] == [(32, 2)]
    fwd = launch.prune_configs(cands, {"Qp": q}, HEAD_DP=128, BLOCK_Q=32, GH_MAX=4)
    assert [(c.kwargs["BLOCK_N"], c.kwargs["GH"]) for c in fwd] == [(64, 4), (64, 2), (128, 4),
                                                                     (32, 2)]
    bwd = launch.prune_configs(cands, {"Qp": q}, HEAD_DP=256, BLOCK_Q=32, GH_MAX=4, DS_F32=False)
    assert [(c.kwargs["BLOCK_N"], c.kwargs["GH"]) for c in bwd] == [(32, 2)]
    # MHA (GH_MAX = 1): splitting changes nothing, duplicates go; 8 warps need >= 64 rows.
    mha = launch.prune_configs(cands, {"Qp": q}, HEAD_DP=64, BLOCK_Q=128, GH_MAX=1)
    assert [(c.kwargs["BLOCK_N"], c.kwargs["GH"]) for c in mha] == [(64, 1), (128, 1), (32, 1)]
    small = launch.prune_configs(cands, {"Qp": q}, HEAD_DP=64, BLOCK_Q=16, GH_MAX=1)     # decoding
    assert [(c.kwargs["BLOCK_N"], c.num_warps) for c in small] == [(16, 4)]


@pytest.mark.parametrize("deterministic", [False, True])
def test_untuned_cuda_path_takes_the_first_tile_that_fits(monkeypatch, deterministic):
    """``DMA_REF_AUTOTUNE=0`` (the GPU accuracy tests) and the deterministic backward (whose
    partial rows depend on the head packing) launch one candidate without timing any: the first
    that fits, with the head packing the caller sized its buffers for when it is fixed."""
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    monkeypatch.setattr(launch, "TUNERS", {})
    monkeypatch.setattr(launch, "FWD_TUNING", ((16, 4, 1, 2), (32, 4, 1, 1)))
    monkeypatch.setattr(launch, "BWD_TUNING", ((16, 4, 1, 2), (16, 4, 1, 1)))
    monkeypatch.setenv("DMA_REF_AUTOTUNE", "0")
    torch.manual_seed(1)
    q = torch.randn(1, 4, 40, 16)
    k, v = torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 16)
    s = (torch.randn(1, 2, 40) * 2).round()                  # ties
    cfg = launch.KernelConfig(rows=32)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, s)]
    o = dma_attention(*leaves, 7, fwd_config=cfg, bwd_config=cfg, deterministic=deterministic)
    do = torch.randn_like(o)
    grads = torch.autograd.grad(o, leaves, do)
    ref = [t.double().requires_grad_(True) for t in (q, k, v, s)]
    o_ref = naive_dma_attention(*ref, 7)
    torch.testing.assert_close(o.double(), o_ref, atol=2e-5, rtol=1e-4)
    for g, g_ref in zip(grads, torch.autograd.grad(o_ref, ref, do.double())):
        torch.testing.assert_close(g.double(), g_ref, atol=2e-5, rtol=1e-4)
    assert launch.TUNERS == {} or all(getattr(t, "cache", {}) == {} for t in launch.TUNERS.values())
