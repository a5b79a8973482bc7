"""Every checker draws its inputs from one seed, names it in its verdict, and replays a failure
exactly when given that seed back."""

from __future__ import annotations

import pytest
import torch

from dma_ref import dma_scores
from dma_ref.check import nb02, nb07


def wrong_scores(v, delta, A):
    return dma_scores(v, delta, A) * 1.001          # close, but not within tolerance


def test_the_verdict_names_the_seed_passed_or_not():
    bad = nb02.check_scores(wrong_scores, seed=7)
    assert not bad and bad.seed == 7 and "seed=7" in repr(bad)
    good = nb07.check_causal_flops(lambda N, D, H: 4 * D * H * N * (N + 1) // 2, seed=8)
    assert good and good.seed == 8 and "seed=8" in repr(good)


def test_a_failure_replays_with_its_seed():
    first = nb02.check_scores(wrong_scores, seed=123)
    again = nb02.check_scores(wrong_scores, seed=123)
    other = nb02.check_scores(wrong_scores, seed=124)
    assert not first and first.message == again.message
    assert other.message != first.message


def test_without_a_seed_torch_manual_seed_makes_it_reproducible():
    torch.manual_seed(5)
    a = nb07.check_causal_flops(lambda N, D, H: 4 * D * H * N * N // 2)
    torch.manual_seed(5)
    b = nb07.check_causal_flops(lambda N, D, H: 4 * D * H * N * N // 2)
    assert not a and a.seed == b.seed and a.message == b.message


def test_a_bad_seed_is_refused():
    with pytest.raises(ValueError, match="seed"):
        nb07.check_crossover(lambda w, BM: 0, seed=-1)
