"""Every checker of notebooks 04-07: fails on the unsolved stub, fails on plausible wrong
answers, passes on a correct solution (the solutions live here, not in the package)."""

from __future__ import annotations

import pytest
import torch
from checker_harness import (
    assert_solution_passes,
    assert_stub_fails,
    assert_wrong_answers_fail,
)

from dma_ref.check import nb04, nb06, nb07

# ---------------------------------------------------------------------------------------------
# Correct solutions
# ---------------------------------------------------------------------------------------------

def update_ok(m, l, acc, x, v):
    m_new = torch.maximum(m, x.max(-1).values)
    ref = torch.where(m_new == float("-inf"), torch.zeros_like(m_new), m_new)
    alpha = torch.exp(m - ref)
    P = torch.exp(x - ref[:, None])
    return m_new, alpha * l + P.sum(-1), alpha[:, None] * acc + P @ v


def union_size_ok(e, p_min, p_max):
    j = torch.arange(len(e))
    return int(((j <= p_max) & (e > torch.clamp(j, min=p_min))).sum())


def keep_ok(i, j, e_j, Q, K):
    p = (K - Q + i)[:, None]
    return (j[None, :] <= p) & (p < e_j[None, :])


def union_lists_ok(e, block_m, Q):
    K = len(e)
    j = torch.arange(K)
    lists = []
    for i0 in range(0, Q, block_m):
        p_min, p_max = K - Q + i0, K - Q + min(Q, i0 + block_m) - 1
        lists.append(j[(j <= p_max) & (e > torch.clamp(j, min=p_min))])
    offsets = torch.tensor([0] + [len(u) for u in lists]).cumsum(0)
    return offsets, torch.cat(lists)


def dS_ok(P, dP, o, dO):
    delta = (dO * o).sum(-1, keepdim=True)
    return P * (dP - delta)


def ds_accumulate_ok(ds, dS, idx):
    ds.index_add_(0, idx, dS.sum((0, 1)))
    return ds


# ---------------------------------------------------------------------------------------------
# Plausible wrong answers
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


def keep_top_left(i, j, e_j, Q, K):
    p = i[:, None]                                       # forgets the K - Q offset
    return (j[None, :] <= p) & (p < e_j[None, :])


def keep_causal_only(i, j, e_j, Q, K):
    return j[None, :] <= (K - Q + i)[:, None]


def keep_inclusive_end(i, j, e_j, Q, K):
    p = (K - Q + i)[:, None]
    return (j[None, :] <= p) & (p <= e_j[None, :])


def union_lists_no_leading_zero(e, block_m, Q):
    offsets, indices = union_lists_ok(e, block_m, Q)
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


def union_size_package(e, p_min, p_max):
    from dma_ref import tiling
    return len(tiling.union_keys(e, p_min, p_max))


def union_lists_package(e, block_m, Q):
    from dma_ref import tiling
    return tiling.union_index_lists(e, block_m, Q)


CASES = [
    (nb04.check_online_softmax_update, update_ok,
     [update_no_rescale, update_nan_on_masked_rows, update_tile_max_only]),
    (nb04.check_union_size, union_size_ok, [union_size_no_admission_test, union_size_last_row,
                                                  union_size_package]),
    (nb06.check_keep_test, keep_ok, [keep_top_left, keep_causal_only, keep_inclusive_end]),
    (nb06.check_union_lists, union_lists_ok, [union_lists_no_leading_zero, union_lists_top_left,
                                                    union_lists_package]),
    (nb07.check_dS, dS_ok, [dS_without_delta, dS_delta_from_tile]),
    (nb07.check_ds_accumulate, ds_accumulate_ok, [ds_assign, ds_rows_only]),
]
IDS = [c[0].__name__ for c in CASES]


@pytest.mark.parametrize("checker, solution, wrongs", CASES, ids=IDS)
def test_stub_fails(checker, solution, wrongs):
    assert_stub_fails(checker)


@pytest.mark.parametrize("checker, solution, wrongs", CASES, ids=IDS)
def test_wrong_answers_fail(checker, solution, wrongs, rng):
    assert_wrong_answers_fail(checker, wrongs, rng)


@pytest.mark.parametrize("checker, solution, wrongs", CASES, ids=IDS)
def test_correct_solution_passes(checker, solution, wrongs, rng):
    assert_solution_passes(checker, solution, rng)
