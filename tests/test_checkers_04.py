"""Every checker of notebook 04: fails on the unsolved stub, on plausible wrong answers and on a
call to the package's own solution; passes on the solved notebook's solution
(``dma_ref.course.solutions("04")``, written once in course/source/)."""

from __future__ import annotations

import torch
from checker_harness import checker_tests

from dma_ref.check import nb04
from dma_ref.course import solutions

S04 = solutions("04")

# ---------------------------------------------------------------------------------------------
# Plausible wrong answers and bypasses
# ---------------------------------------------------------------------------------------------

def update_no_rescale(m, l, acc, x, v):
    m_new = torch.maximum(m, x.max(-1).values)
    ref = torch.where(m_new == float("-inf"), torch.zeros_like(m_new), m_new)
    P = torch.exp(x - ref[:, None])
    return m_new, l + P.sum(-1), acc + P @ v            # forgets alpha = exp(m - m_new)


def update_nan_on_masked_rows(m, l, acc, x, v):
    m_new = torch.maximum(m, x.max(-1).values)
    alpha = torch.exp(m - m_new)                         # -inf - (-inf) = NaN
    P = torch.exp(x - m_new[:, None])
    return m_new, alpha * l + P.sum(-1), alpha[:, None] * acc + P @ v


def update_tile_max_only(m, l, acc, x, v):
    m_tile = x.max(-1).values
    m_new = torch.maximum(m, m_tile)
    ref = torch.where(m_new == float("-inf"), torch.zeros_like(m_new), m_new)
    ref_t = torch.where(m_tile == float("-inf"), torch.zeros_like(m_tile), m_tile)
    alpha = torch.exp(m - ref)
    P = torch.exp(x - ref_t[:, None])                    # exponentiates against the tile max
    return m_new, alpha * l + P.sum(-1), alpha[:, None] * acc + P @ v


def union_size_no_admission_test(e, p_min, p_max):
    j = torch.arange(len(e))
    return int(((j <= p_max) & (e > p_min)).sum())     # counts keys that were never admitted


def union_size_last_row(e, p_min, p_max):
    j = torch.arange(len(e))
    return int(((j <= p_max) & (e > p_max)).sum())     # only the keys of the block's last row


def union_size_package(e, p_min, p_max):
    from dma_ref import tiling
    return len(tiling.union_keys(e, p_min, p_max))


CASES = [
    (nb04.check_online_softmax_update, S04.online_softmax_update,
     [update_no_rescale, update_nan_on_masked_rows, update_tile_max_only]),
    (nb04.check_union_size, S04.union_size, [union_size_no_admission_test, union_size_last_row,
                                             union_size_package]),
]
test_stub_fails, test_wrong_answers_fail, test_correct_solution_passes = checker_tests(CASES)
