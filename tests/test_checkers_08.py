"""The checkers of notebook 08 fail on the stub and on plausible wrong answers, pass on a
correct solution."""

from __future__ import annotations

import pytest
import torch

from dma_ref.check import nb08


def stub(*args, **kwargs):
    raise NotImplementedError


def causal_flops_ok(N, D, H):
    return 4 * D * H * N * (N + 1) // 2


def causal_flops_no_diagonal(N, D, H):
    return 4 * D * H * N * N // 2


def causal_flops_one_matmul(N, D, H):
    return 2 * D * H * N * (N + 1) // 2


def crossover_ok(w, BM):
    return 4 * (w + BM) - 1


def crossover_off_by_one(w, BM):
    return 4 * (w + BM)


def crossover_equal_work(w, BM):
    return 2 * (w + BM) - 1            # where DMA work equals dense, not half of it


@pytest.mark.parametrize("check, fn", [
    (nb08.check_causal_flops, stub),
    (nb08.check_causal_flops, causal_flops_no_diagonal),
    (nb08.check_causal_flops, causal_flops_one_matmul),
    (nb08.check_crossover, stub),
    (nb08.check_crossover, crossover_off_by_one),
    (nb08.check_crossover, crossover_equal_work),
])
def test_checker_rejects(check, fn, rng):
    for seed in torch.randint(0, 2**31 - 1, (3,), generator=rng).tolist():
        assert not check(fn, strict=False, seed=seed)
    with pytest.raises(AssertionError):
        check(fn, strict=True)


@pytest.mark.parametrize("check, fn", [
    (nb08.check_causal_flops, causal_flops_ok),
    (nb08.check_crossover, crossover_ok),
])
def test_checker_accepts(check, fn, rng):
    for seed in torch.randint(0, 2**31 - 1, (3,), generator=rng).tolist():
        assert check(fn, strict=True, seed=seed)
