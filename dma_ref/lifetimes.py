"""The lifetime form of the causal row-mode mask: one integer per key (DESIGN.md section 3.5).

Let ``theta_p`` be the rank of the w-th best key among ``{j <= p}`` (``K`` while fewer than w keys
exist). A key of rank ``r_j`` is kept at position ``p >= j`` iff ``r_j <= theta_p``. ``theta_p``
never increases with ``p`` (more keys can only push the w-th best up), so the positions that keep
key ``j`` form one interval::

    keep(p, j)  <=>  j <= p < e_j,   e_j = max(j, first p with theta_p < r_j)   (K if none)

``e_j = j`` means key j is never admitted; ``e_j = K`` means it is never evicted. Building ``e``
needs ``theta`` (a running w-th order statistic: one heap pass, O(K log w)) and a binary search
per key (O(K log K)); no K x K tensor anywhere.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch

from .dense import query_positions
from .mask import key_ranks
from .validate import check_score_values, check_tensor, check_window


def running_threshold(ranks: np.ndarray, w: int) -> np.ndarray:
    """``theta [K]``: the w-th smallest rank among ``ranks[:p + 1]`` (``K`` while p + 1 < w)."""
    K = len(ranks)
    theta = np.full(K, K, dtype=np.int64)
    worst_kept: list[int] = []                          # max-heap (negated) of the w best ranks
    for p, r in enumerate(ranks.tolist()):
        if len(worst_kept) < w:
            heapq.heappush(worst_kept, -r)
        elif r < -worst_kept[0]:
            heapq.heapreplace(worst_kept, -r)
        if len(worst_kept) == w:
            theta[p] = -worst_kept[0]
    return theta


def lifetimes_from_ranks(ranks: np.ndarray, w: int) -> np.ndarray:
    """``e [K]`` for one head from its key ranks ``[K]`` (see the module docstring)."""
    K = len(ranks)
    theta = running_threshold(ranks, w)
    # First p with theta_p < r_j  <=>  first p with -theta_p > -r_j; -theta is non-decreasing.
    first_evict = np.searchsorted(-theta, -ranks, side="right")
    return np.maximum(np.arange(K), first_evict)


def key_lifetimes(s: torch.Tensor, window: int) -> torch.Tensor:
    """int64 ``[B, Hkv, K]``: ``e_j`` such that query position p keeps key j iff ``j <= p < e_j``.

    s ``[B, Hkv, K]`` (float, no NaN), window = w >= 1. Causal row mode; equals
    ``dma_mask(s, w)`` exactly, ties included.
    """
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    check_score_values(s)
    w = check_window(window)
    B, Hkv, K = s.shape
    ranks = key_ranks(s).reshape(B * Hkv, K).cpu().numpy()
    e = np.stack([lifetimes_from_ranks(r, w) for r in ranks]) if B * Hkv else np.zeros((0, K))
    return torch.as_tensor(e, dtype=torch.int64).reshape(B, Hkv, K).to(s.device)


def mask_from_lifetimes(e: torch.Tensor, q_len: int | None = None, *,
                        first: int | None = None) -> torch.Tensor:
    """bool ``[B, Hkv, Q, K]`` from lifetimes ``e [B, Hkv, K]``: ``keep(p, j) = j <= p < e_j`` for
    the Q query positions ``first .. first + Q - 1`` (default: the last Q, bottom-right aligned;
    None: Q = K). For checks, pictures and the benchmark's dense baselines (in row chunks)."""
    K = e.shape[-1]
    Q = K if q_len is None else q_len
    if first is None:
        p = query_positions(Q, K, e.device)
    else:
        p = torch.arange(first, first + Q, device=e.device)
    p = p[:, None]
    j = torch.arange(K, device=e.device)[None, :]
    return (j <= p) & (p < e[:, :, None, :])
