"""Every checker of the PyTorch exercises of notebooks 06-07 (notebook 04: test_checkers_04.py;
the Triton exercises: test_checkers_06_07_triton.py): fails on the unsolved stub and on plausible
wrong answers, passes on the solved notebooks' solutions (``dma_ref.course.solutions("06")``,
written once in course/source/)."""

from __future__ import annotations

import torch
from checker_harness import checker_tests

from dma_ref.check import nb06, nb07
from dma_ref.course import solutions

S06, S07 = solutions("06"), solutions("07")

# ---------------------------------------------------------------------------------------------
# Plausible wrong answers
# ---------------------------------------------------------------------------------------------

def keep_top_left(i, j, e_j, Q, K):
    p = i[:, None]                                       # forgets the K - Q offset
    return (j[None, :] <= p) & (p < e_j[None, :])


def keep_causal_only(i, j, e_j, Q, K):
    return j[None, :] <= (K - Q + i)[:, None]


def keep_inclusive_end(i, j, e_j, Q, K):
    p = (K - Q + i)[:, None]
    return (j[None, :] <= p) & (p <= e_j[None, :])


def union_lists_no_leading_zero(e, block_m, Q):
    offsets, indices = S06.union_lists(e, block_m, Q)
    return offsets[1:], indices


def union_lists_top_left(e, block_m, Q):
    K = len(e)
    j = torch.arange(K)
    lists = [j[(j <= min(Q, i0 + block_m) - 1) & (e > torch.clamp(j, min=i0))]
             for i0 in range(0, Q, block_m)]
    return torch.tensor([0] + [len(u) for u in lists]).cumsum(0), torch.cat(lists)


def dS_without_delta(P, dP, o, dO):
    return P * dP


def dS_delta_from_tile(P, dP, o, dO):
    return P * (dP - (P * dP).sum(-1, keepdim=True))   # right only when the tile is the whole row


def ds_assign(ds, dS, idx):
    ds[idx] = dS.sum((0, 1))                             # overwrites earlier tiles' contributions
    return ds


def ds_rows_only(ds, dS, idx):
    ds.index_add_(0, idx, dS.sum(1).mean(0))             # averages the G heads instead of summing
    return ds


def union_lists_package(e, block_m, Q):
    from dma_ref import tiling
    return tiling.union_index_lists(e, block_m, Q)


CASES = [
    (nb06.check_keep_test, S06.keep_test, [keep_top_left, keep_causal_only, keep_inclusive_end]),
    (nb06.check_union_lists, S06.union_lists, [union_lists_no_leading_zero, union_lists_top_left,
                                                    union_lists_package]),
    (nb07.check_dS, S07.dS_chunk, [dS_without_delta, dS_delta_from_tile]),
    (nb07.check_ds_accumulate, S07.ds_accumulate, [ds_assign, ds_rows_only]),
]
test_stub_fails, test_wrong_answers_fail, test_correct_solution_passes = checker_tests(CASES)
