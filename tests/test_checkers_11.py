"""The checker of notebook 11: fails on the stub, on plausible wrong answers and on a call to the
package's own solution; passes on correct solutions (written here, not in the package)."""

from __future__ import annotations

import pytest
import torch

from dma_ref.check import nb11
from dma_ref.nn import cache as cache_mod


def stub(*args, **kwargs):
    raise NotImplementedError


def update_ok(live_pos, live_s, new_pos, new_s, window):
    pos = torch.cat([live_pos, new_pos]).tolist()
    s = torch.cat([live_s, new_s]).tolist()
    best = sorted(range(len(pos)), key=lambda i: (s[i], pos[i]), reverse=True)[:window]
    return torch.tensor(sorted(pos[i] for i in best), dtype=torch.int64)


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


def three_seeds(rng: torch.Generator) -> list[int]:
    return [int(x) for x in torch.randint(0, 2**31 - 1, (3,), generator=rng)]


def test_stub_fails():
    assert not nb11.check_cache_update(stub)
    with pytest.raises(AssertionError, match="not attempted"):
        nb11.check_cache_update(stub, strict=True)


def test_solution_passes(rng):
    for seed in three_seeds(rng):
        result = nb11.check_cache_update(update_ok, strict=True, seed=seed)
        assert result and result.seed == seed


@pytest.mark.parametrize("wrong", [update_earlier_wins, update_topk, update_only_new_evicts,
                                   update_package])
def test_wrong_answers_fail(wrong, rng):
    for seed in three_seeds(rng):
        assert not nb11.check_cache_update(wrong, seed=seed)


def test_package_solution_is_restored():
    nb11.check_cache_update(update_package)
    assert cache_mod.cache_update.__module__ == "dma_ref.nn.cache"
