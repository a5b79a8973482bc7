"""dma_ref.memory: the measured memory of naive DMA is exact, deterministic and quadratic."""

from __future__ import annotations

import torch

import dma_ref
from dma_ref import memory


def test_saved_tensor_bytes_counts_distinct_storages():
    x = torch.randn(100, requires_grad=True)
    # x * x saves x twice (same storage, counted once); exp saves its 100-float result.
    _, nbytes = memory.saved_tensor_bytes(lambda: (x * x).exp())
    assert nbytes == 400 + 400
    _, none = memory.saved_tensor_bytes(lambda: x.detach() + 1)
    assert none == 0


def test_largest_intermediate_sees_the_biggest_allocation():
    a = torch.randn(10, 20)
    _, largest, total = memory.largest_intermediate_bytes(lambda: (a @ a.T).sum() + a.view(-1).sum())
    assert largest == 10 * 10 * 4                               # a @ a.T; the view allocates nothing
    assert total >= largest


def test_naive_dma_memory_is_quadratic():
    rs = [memory.naive_dma_memory(n, Hq=2, Hkv=1, D=16, window=8) for n in (64, 128, 256, 512)]
    assert [r["N"] for r in rs] == [64, 128, 256, 512]
    # The largest tensor is an N x N tensor of 8-byte ranks (dma_mask's sort) or of fp32 logits x heads.
    assert all(r["largest_bytes"] >= 8 * r["N"] ** 2 for r in rs)
    ratios = [rs[i + 1]["saved_bytes"] / rs[i]["saved_bytes"] for i in range(3)]
    assert all(3.5 < r <= 4.0 for r in ratios), ratios
    a, _b, _c = memory.quadratic_fit([r["N"] for r in rs], [r["saved_bytes"] for r in rs])
    # Saved for backward holds at least the [B, Hq, N, N] fp32 probabilities (8 bytes per N^2 here).
    assert a >= 2 * 4
    assert rs[0]["input_bytes"] == 4 * (2 * 64 * 16 + 2 * 64 * 16 + 64)
    # Deterministic: the same call measures the same bytes.
    assert memory.naive_dma_memory(128, Hq=2, Hkv=1, D=16, window=8) == rs[1]


def test_quadratic_fit_recovers_coefficients():
    N = [10, 20, 40, 80]
    a, b, c = memory.quadratic_fit(N, [3 * n * n + 5 * n + 7 for n in N])
    assert abs(a - 3) < 1e-6 and abs(b - 5) < 1e-4 and abs(c - 7) < 1e-2


def test_measurement_does_not_change_the_result():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 32, 8, generator=g) for _ in range(3))
    s = torch.randn(1, 2, 32, generator=g)
    run = lambda: dma_ref.naive_dma_attention(q, k, v, s, 5)
    out, _ = memory.saved_tensor_bytes(run)
    out2, _, _ = memory.largest_intermediate_bytes(run)
    torch.testing.assert_close(out, run())
    torch.testing.assert_close(out2, run())
