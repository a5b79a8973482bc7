"""Checkers for notebook 12 (the paper comparison): how many tokens NSA's selected branch reads."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..lab.paper import sizing
from ..nn.nsa import NSASizes, select_blocks, selected_keys
from .core import Result, exercise, forbid, generator, resolve_seed, run_checks


@exercise(points=2)
def check_selected_tokens(fn: Callable[[int, int, int], int], strict: bool = False, *,
                          seed: int | None = None) -> Result:
    """``fn(t, select_block, n_select) -> int``: the number of keys NSA's selected branch reads
    at position t (blocks of ``select_block`` tokens, ``n_select`` kept, the query's own block
    among them, keys ``j <= t`` only). Compared with the keys ``select_blocks`` really keeps for
    random importances."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for L, n, N in [(4, 2, 23), (8, 4, 70), (5, 3, 41), (3, 1, 10), (16, 4, 40), (2, 9, 15)]:
            sizes = NSASizes(block=L, stride=L, select_block=L, n_select=n)
            importance = torch.rand(1, 1, N, max(0, N // L), generator=g)
            want = selected_keys(select_blocks(importance, sizes), sizes)[0, 0].sum(-1).tolist()
            ts = torch.randint(0, N, (6,), generator=g).tolist() + [N - 1, L - 1, L]
            with forbid("write it yourself: the exercise is to count them, not to call "
                        "sizing.keys_read", (sizing, "keys_read")):
                for t in ts:
                    if t >= N:
                        continue
                    got = fn(t, L, n)
                    assert int(got) == want[t], (
                        f"t={t}, select_block={L}, n_select={n} (seed {seed}): the branch reads "
                        f"{want[t]} keys, got {got}")
    return run_checks("tokens NSA's selected branch reads", trials, strict=strict, seed=seed)
