"""What every exercise checker must do, for the checker test files: fail on the unsolved stub,
fail on plausible wrong answers over several seeds, pass the reference solution (naming the seed
in its result)."""

from __future__ import annotations

import pytest
import torch


def stub(*args, **kwargs):
    raise NotImplementedError


def three_seeds(rng: torch.Generator) -> list[int]:
    """Three checker seeds, new on every test run (the run's seed is in pytest's header)."""
    return torch.randint(0, 2**31 - 1, (3,), generator=rng).tolist()


def assert_stub_fails(checker) -> None:
    assert not checker(stub)
    with pytest.raises(AssertionError, match="not attempted"):
        checker(stub, strict=True)


def assert_wrong_answers_fail(checker, wrongs, rng: torch.Generator) -> None:
    for wrong in wrongs:
        for seed in three_seeds(rng):     # several inputs: the failure must not be luck
            result = checker(wrong, seed=seed)
            assert not result and result.seed == seed, wrong.__name__
        with pytest.raises(AssertionError):
            checker(wrong, strict=True)


def assert_solution_passes(checker, solution, rng: torch.Generator) -> None:
    for seed in three_seeds(rng):
        result = checker(solution, strict=True, seed=seed)
        assert result and result.passed and result.seed == seed


def checker_tests(cases: list[tuple]):
    """The three tests above, parametrized over ``cases`` of ``(checker, solution, wrongs)`` and
    named by checker, for a test module to bind at top level::

        (test_stub_fails, test_wrong_answers_fail,
         test_correct_solution_passes) = checker_tests(CASES)
    """
    ids = [c[0].__name__ for c in cases]
    each = pytest.mark.parametrize("checker, solution, wrongs", cases, ids=ids)

    @each
    def test_stub_fails(checker, solution, wrongs):
        assert_stub_fails(checker)

    @each
    def test_wrong_answers_fail(checker, solution, wrongs, rng):
        assert_wrong_answers_fail(checker, wrongs, rng)

    @each
    def test_correct_solution_passes(checker, solution, wrongs, rng):
        assert_solution_passes(checker, solution, rng)

    return test_stub_fails, test_wrong_answers_fail, test_correct_solution_passes
