"""The checkers of notebook 08 fail on the stub, on plausible wrong answers and on a call to the
package's own counts, and pass on the solved notebook's solutions (``dma_ref.course``)."""

from __future__ import annotations

from checker_harness import checker_tests

from dma_ref import flops
from dma_ref.check import nb08
from dma_ref.course import solutions

S08 = solutions("08")


def causal_flops_no_diagonal(N, D, H):
    return 4 * D * H * N * N // 2


def causal_flops_one_matmul(N, D, H):
    return 2 * D * H * N * (N + 1) // 2


def causal_flops_package(N, D, H):
    return flops.attention_flops(flops.causal_pairs(N), D, H)


def crossover_off_by_one(w, BM):
    return 4 * (w + BM)


def crossover_equal_work(w, BM):
    return 2 * (w + BM) - 1            # where DMA work equals dense, not half of it


def crossover_package(w, BM):
    return flops.crossover_n(w, BM)


CASES = [
    (nb08.check_causal_flops, S08.causal_attention_flops,
     [causal_flops_no_diagonal, causal_flops_one_matmul, causal_flops_package]),
    (nb08.check_crossover, S08.crossover_length,
     [crossover_off_by_one, crossover_equal_work, crossover_package]),
]
test_stub_fails, test_wrong_answers_fail, test_correct_solution_passes = checker_tests(CASES)


def test_the_counts_work_again_after_a_check():
    nb08.check_crossover(crossover_package)
    assert flops.crossover_n(1024) == S08.crossover_length(1024, 128)
