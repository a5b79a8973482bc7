"""Checker for notebook 11 (decoding): the update of a bounded DMA cache for one head."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..lifetimes import key_lifetimes
from ..nn import cache as cache_mod
from .core import Result, exercise, expect_tensor, forbid, generator, resolve_seed, run_checks

CASES = [  # (K, window, chunk sizes cycled, score levels: 0 = distinct floats)
    (20, 4, [1], 0),
    (24, 5, [1], 3),          # ties everywhere: the later key must win
    (30, 6, [7, 1, 3], 0),    # chunks: a prefill, then decoding
    (27, 3, [5, 2], 2),
    (12, 20, [4, 1], 3),      # w >= context: nothing is ever evicted
]


@exercise(points=2)
def check_cache_update(fn: Callable[..., torch.Tensor], strict: bool = False, *,
                       seed: int | None = None) -> Result:
    """``fn(live_pos, live_s, new_pos, new_s, window) -> pos``: live_pos int64 ``[L]`` ascending
    and live_s ``[L]`` are the cache's keys, new_pos ``[C]`` and new_s ``[C]`` a chunk of new
    tokens after them; return the int64 positions of the keys the cache holds after the chunk,
    ascending (the w best of live and new by ``(s_j, j)``, the later key winning a tie)."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for K, w, sizes, levels in CASES:
            s = (torch.randint(0, levels, (K,), generator=g).double() if levels
                 else torch.randn(K, generator=g, dtype=torch.float64))
            e = key_lifetimes(s.view(1, 1, K), w)[0, 0]
            live = torch.zeros(0, dtype=torch.int64)
            start, i = 0, 0
            while start < K:
                stop = min(K, start + sizes[i % len(sizes)])
                new = torch.arange(start, stop)
                with forbid("write the update yourself: do not call the package's cache_update",
                            (cache_mod, "cache_update")):
                    got = fn(live.clone(), s[live].clone(), new.clone(), s[new].clone(), w)
                # The keys alive after position stop - 1: lifetimes reaching past it.
                want = torch.nonzero((torch.arange(K) < stop) & (e >= stop))[:, 0]
                where = f"K={K}, window={w}, after position {stop - 1} (seed {seed})"
                expect_tensor(got, dtype=torch.int64, where=where)
                if got.tolist() != want.tolist():
                    raise AssertionError(f"{where}: cache holds {got.tolist()}, "
                                         f"expected {want.tolist()} (scores {s[:stop].tolist()})")
                live, start, i = want, stop, i + 1
    return run_checks("bounded DMA cache update", trials, strict=strict, seed=seed)
