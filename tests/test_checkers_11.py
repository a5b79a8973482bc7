"""The checker of notebook 11: fails on the stub, on plausible wrong answers and on a call to the
package's own solution; passes on the solved notebook's solution (``dma_ref.course.solutions``)."""

from __future__ import annotations

import torch
from checker_harness import assert_solution_passes, assert_stub_fails, assert_wrong_answers_fail

from dma_ref.check import nb11
from dma_ref.course import solutions
from dma_ref.nn import cache as cache_mod

S11 = solutions("11")


def update_earlier_wins(live_pos, live_s, new_pos, new_s, window):
    pos = torch.cat([live_pos, new_pos]).tolist()
    s = torch.cat([live_s, new_s]).tolist()
    best = sorted(range(len(pos)), key=lambda i: (-s[i], pos[i]))[:window]
    return torch.tensor(sorted(pos[i] for i in best), dtype=torch.int64)


def update_topk(live_pos, live_s, new_pos, new_s, window):
    pos, s = torch.cat([live_pos, new_pos]), torch.cat([live_s, new_s])
    return pos[torch.topk(s, min(window, len(s))).indices].sort().values


def update_only_new_evicts(live_pos, live_s, new_pos, new_s, window):
    """Forgets that the kept set may be below w: drops the oldest key once w are held."""
    pos = torch.cat([live_pos, new_pos])
    return pos[-window:]


def update_package(live_pos, live_s, new_pos, new_s, window):
    return cache_mod.cache_update(live_pos, live_s, new_pos, new_s, window)


def test_stub_fails():
    assert_stub_fails(nb11.check_cache_update)


def test_solution_passes(rng):
    assert_solution_passes(nb11.check_cache_update, S11.cache_update, rng)


def test_wrong_answers_fail(rng):
    assert_wrong_answers_fail(nb11.check_cache_update, [update_earlier_wins, update_topk,
                                                         update_only_new_evicts, update_package],
                              rng)


def test_package_solution_is_restored():
    nb11.check_cache_update(update_package)
    assert cache_mod.cache_update.__module__ == "dma_ref.nn.cache"
