"""Checkers for notebook 00 (start here): a sliding-window mask and "which keys does query p keep".

Each checker runs the learner's function on fresh random inputs and awkward cases against the
package's reference and returns a ``Result`` (truthy when solved); ``strict=True`` raises.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import mask as mask_mod
from ..mask import dma_mask
from .core import (
    Result,
    exercise,
    expect_tensor,
    forbid_package,
    generator,
    resolve_seed,
    run_checks,
)


def reference_sliding_window(N: int, window: int) -> torch.Tensor:
    """bool ``[N, N]``: query p keeps keys ``p - window < j <= p``."""
    p = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    return (j <= p) & (j > p - window)


@exercise(points=1)
def check_sliding_window(fn: Callable[[int, int], torch.Tensor], strict: bool = False, *,
                         seed: int | None = None) -> Result:
    """``fn(N, window) -> bool [N, N]``: True where query p keeps key j (the w most recent keys)."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        cases = [(1, 1), (5, 1), (6, 3), (8, 8), (7, 20)]
        cases += [(int(torch.randint(2, 40, (), generator=g)),
                   int(torch.randint(1, 12, (), generator=g))) for _ in range(5)]
        for N, w in cases:
            got = fn(N, w)
            expect_tensor(got, dtype=torch.bool, shape=(N, N), where=f"N={N}")
            want = reference_sliding_window(N, w)
            bad = (got != want).nonzero()
            assert bad.numel() == 0, (f"N={N}, window={w} (seed {seed}): wrong at (p, j) = "
                                      f"{tuple(bad[0].tolist())}; "
                                      f"expected {bool(want[tuple(bad[0])])}")
    return run_checks("sliding window mask", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_kept_keys(fn: Callable[[torch.Tensor, int, int], object], strict: bool = False, *,
                    seed: int | None = None) -> Result:
    """``fn(s, window, p) -> the keys query p keeps`` in DMA row mode (causal), ascending.

    s: float ``[N]`` one head's scores. The answer may be a list or an int tensor of key
    indices sorted ascending. Remember the tie rule: on equal scores the later key wins.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for trial in range(12):
            N = int(torch.randint(3, 30, (), generator=g))
            w = int(torch.randint(1, 8, (), generator=g))
            if trial % 3 == 0:      # many ties: scores from a handful of values
                s = torch.randint(0, 3, (N,), generator=g).float()
            elif trial % 3 == 1:
                s = torch.randn(N, generator=g)
            else:                   # all equal: the tie rule keeps the w most recent keys
                s = torch.ones(N)
            keep = dma_mask(s[None, None], w)[0, 0]
            for p in (0, N - 1, int(torch.randint(0, N, (), generator=g))):
                with forbid_package("dma_mask", mask_mod):
                    got = fn(s.clone(), w, p)
                got = torch.as_tensor(got, dtype=torch.int64).flatten().tolist()
                want = keep[p].nonzero().flatten().tolist()
                assert got == want, (f"s={[round(x, 3) for x in s.tolist()]}, window={w}, p={p} "
                                     f"(seed {seed}): expected keys {want}, got {got}")
    return run_checks("keys kept by query p", trials, strict=strict, seed=seed)
