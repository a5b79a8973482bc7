"""The Triton exercises of notebooks 06 (the DMA forward over gathered unions) and 07 (the
key-major dK, dV, ds pass): each checker passes the solved notebook's kernel
(``dma_ref.course.solutions("06").dma_fwd_kernel``, written once in course/source/), rejects the
unsolved stub, plausible wrong kernels, and bypasses (torch doing the work from inside the
kernel, the package's jit helpers under an alias, the package's own kernel object). Stubs, wrong
kernels and bypasses: tests/triton_solutions_06_07.py."""

from __future__ import annotations

import inspect
import re

import pytest
import triton_solutions_06_07 as sol
from checker_harness import assert_solution_passes, assert_wrong_answers_fail

from dma_ref.check import nb06, nb07
from dma_ref.course import solutions

S06, S07 = solutions("06"), solutions("07")

CASES = [
    (nb06.check_dma_forward_kernel, sol.fwd_stub, S06.dma_fwd_kernel,
     [sol.fwd_top_left, sol.fwd_interleaved_heads, sol.fwd_no_nan_guard, sol.fwd_unmasked_list]),
    (nb07.check_key_major_backward, sol.km_stub, S07.key_major_kernel,
     [sol.km_one_head, sol.km_rows_as_positions, sol.km_delta_from_tile, sol.km_no_lse_guard]),
]
IDS = [c[0].__name__ for c in CASES]
BYPASSES = [
    (nb06.check_dma_forward_kernel, sol.fwd_by_torch, "called torch"),
    (nb06.check_dma_forward_kernel, sol.fwd_by_package_op, "called torch"),
    (nb06.check_dma_forward_kernel, sol.fwd_by_package_helper, "the package's keep_pairs"),
    (nb06.check_dma_forward_kernel, sol.fwd_package_kernel(), "the package's kernel"),
    (nb07.check_key_major_backward, sol.km_by_torch, "called torch"),
    (nb07.check_key_major_backward, sol.km_by_package_helper, "the package's keep_pairs"),
    (nb07.check_key_major_backward, sol.km_package_kernel(), "the package's kernel"),
]


@pytest.mark.parametrize("checker, stub, solution, wrongs", CASES, ids=IDS)
def test_stub_fails(checker, stub, solution, wrongs):
    # The notebook's stub is a kernel with an empty body: it stores nothing.
    result = checker(stub)
    assert not result and "not attempted" in result.message
    with pytest.raises(AssertionError, match="not attempted"):
        checker(stub, strict=True)


@pytest.mark.parametrize("checker, stub, solution, wrongs", CASES, ids=IDS)
def test_wrong_answers_fail(checker, stub, solution, wrongs, rng):
    assert_wrong_answers_fail(checker, wrongs, rng)


@pytest.mark.parametrize("checker, stub, solution, wrongs", CASES, ids=IDS)
def test_correct_solution_passes(checker, stub, solution, wrongs, rng):
    assert_solution_passes(checker, solution, rng)


@pytest.mark.parametrize("old, found", [("no such line", 0), ("tl.load(", 8)])
def test_a_mutant_edit_must_match_exactly_once(old, found):
    # The wrong kernels are mutants of the solutions: an edit that no longer matches the solution
    # (or matches twice) must fail loudly, not quietly test the right kernel.
    with pytest.raises(AssertionError, match=re.escape(f"edit {old!r} found {found} times")):
        sol.mutant(S06.dma_fwd_kernel, "fwd_broken", (old, "x"))


def test_a_mutant_differs_from_its_solution():
    with pytest.raises(AssertionError, match="change nothing"):
        sol.mutant(S06.dma_fwd_kernel, "fwd_noop", ("p = K - Q + i", "p = K - Q + i"))
    with pytest.raises(AssertionError, match="reads no tl_helper"):
        sol.mutant(S07.key_major_kernel, "km_noop", tl_helper=S07.probabilities)
    # Each wrong kernel differs from its solution: in its source, or in a helper it calls.
    for _, _, solution, wrongs in CASES:
        for wrong in wrongs:
            glob, solution_glob = wrong.fn.__globals__, solution.fn.__globals__
            changed = [name for name in solution.fn.__code__.co_names
                       if glob.get(name) is not solution_glob.get(name)]
            source = inspect.getsource(wrong.fn).replace(wrong.fn.__name__, solution.fn.__name__, 1)
            assert source != inspect.getsource(solution.fn) or changed, wrong.fn.__name__


@pytest.mark.parametrize("checker, bypass, message", BYPASSES,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(BYPASSES)])
def test_bypass_fails(checker, bypass, message):
    result = checker(bypass, seed=0)
    assert not result and message in result.message and result.seed == 0
