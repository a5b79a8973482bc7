"""Every checker draws its inputs from one seed, names it in its verdict, and replays a failure
exactly when given that seed back."""

from __future__ import annotations

import inspect

import pytest
import torch

from dma_ref import dma_scores
from dma_ref.check import nb00, nb01, nb02, nb03, nb04, nb06, nb07, nb08, nb09, nb10, nb11

CHECKERS = [fn for module in (nb00, nb01, nb02, nb03, nb04, nb06, nb07, nb08, nb09, nb10,
                               nb11)
            for name, fn in vars(module).items()
            if name.startswith("check_") and inspect.getmodule(fn) is module]


def wrong_scores(v, delta, A):
    return dma_scores(v, delta, A) * 1.001          # close, but not within tolerance


def test_the_verdict_names_the_seed_passed_or_not():
    bad = nb02.check_scores(wrong_scores, seed=7)
    assert not bad and bad.seed == 7 and "seed=7" in repr(bad)
    good = nb08.check_causal_flops(lambda N, D, H: 4 * D * H * N * (N + 1) // 2, seed=8)
    assert good and good.seed == 8 and "seed=8" in repr(good)


def test_a_failure_replays_with_its_seed():
    first = nb02.check_scores(wrong_scores, seed=123)
    again = nb02.check_scores(wrong_scores, seed=123)
    other = nb02.check_scores(wrong_scores, seed=124)
    assert not first and first.message == again.message
    assert other.message != first.message


def test_without_a_seed_torch_manual_seed_makes_it_reproducible():
    torch.manual_seed(5)
    a = nb08.check_causal_flops(lambda N, D, H: 4 * D * H * N * N // 2)
    torch.manual_seed(5)
    b = nb08.check_causal_flops(lambda N, D, H: 4 * D * H * N * N // 2)
    assert not a and a.seed == b.seed and a.message == b.message


def test_a_bad_seed_is_refused():
    with pytest.raises(ValueError, match="seed"):
        nb08.check_crossover(lambda w, BM: 0, seed=-1)


def stub(*args, **kwargs):
    raise NotImplementedError


def crash(*args, **kwargs):
    raise RuntimeError("shape mismatch")


@pytest.mark.parametrize("checker", CHECKERS, ids=[f.__module__[-4:] + "." + f.__name__
                                                   for f in CHECKERS])
def test_every_checker_takes_a_seed_and_names_it(checker, capsys):
    assert inspect.signature(checker).parameters["seed"].default is None
    for fn in (stub, crash):
        result = checker(fn, seed=2024)
        assert not result and result.seed == 2024
        assert "seed=2024" in repr(result) and "seed=2024" in capsys.readouterr().out
    assert isinstance(checker(stub).seed, int)          # without seed=, one is still named
