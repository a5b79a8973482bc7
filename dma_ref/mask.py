"""Which keys each query keeps: the DMA selection (DESIGN.md section 3.2).

Keys are ranked by ``(s_j, j)`` descending: a higher score wins and, on equal scores, the later
key wins (bf16 scores tie often and ``torch.topk`` leaves tie order undefined, so we fix it).

* ``mode="row"`` (the paper's Listing 1): a causal query at position ``p`` keeps the
  ``min(w, p + 1)`` highest-ranked keys among ``{j <= p}``; a non-causal query keeps the ``w``
  highest-ranked keys of all ``K``.
* ``mode="global"`` (flash-sparse-attn 1.2): one set ``T`` of the ``w`` highest-ranked keys of all
  ``K``; a causal query keeps ``T ∩ {j <= p}``. Rows can be empty, and row ``p`` depends on keys
  after ``p`` (a causality leak).

This module materialises the ``[B, Hkv, Q, K]`` mask: it is the readable specification.
``lifetimes.py`` holds the O(K) form that the kernels use.
"""

from __future__ import annotations

import torch

from .dense import query_positions
from .validate import check_mode, check_score_values, check_tensor, check_window


def key_order(s: torch.Tensor) -> torch.Tensor:
    """int64 ``[..., K]``: the key indices, best first, by ``(s_j, j)`` descending.

    Sorting the reversed sequence with a stable sort puts, among equal scores, the later key
    first: exactly the tie rule.
    """
    K = s.shape[-1]
    order_rev = torch.sort(s.flip(-1), dim=-1, descending=True, stable=True).indices
    return (K - 1) - order_rev


def key_ranks(s: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
    """int64 ``[..., K]``: rank of each key, 0 = best (the inverse permutation of ``key_order``)."""
    order = key_order(s) if order is None else order
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(s.shape[-1], device=s.device).expand_as(order))
    return ranks


def sliding_window_mask(N: int, window: int, device=None) -> torch.Tensor:
    """bool ``[N, N]``: the causal sliding window, query p keeps the ``window`` most recent keys
    ``p - window < j <= p`` (``window >= N``: plain causal)."""
    p = torch.arange(N, device=device)[:, None]
    j = torch.arange(N, device=device)[None, :]
    return (j <= p) & (j > p - window)


def sliding_window_lifetimes(N: int, window: int, device=None) -> torch.Tensor:
    """int64 ``[N]``: the lifetimes of ``sliding_window_mask``, ``e_j = min(j + window, N)``."""
    return (torch.arange(N, device=device) + window).clamp(max=N)


def dma_mask(s: torch.Tensor, window: int, *, q_len: int | None = None, causal: bool = True,
             mode: str = "row") -> torch.Tensor:
    """bool ``[B, Hkv, Q, K]``, ``True`` where query row ``i`` keeps key ``j``.

    s ``[B, Hkv, K]`` (any float dtype, no NaN or +inf), window = w >= 1, q_len = Q <= K
    (None: Q = K).
    """
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    check_score_values(s)
    w = check_window(window)
    check_mode(mode)
    B, Hkv, K = s.shape
    Q = K if q_len is None else q_len
    if isinstance(Q, bool) or not isinstance(Q, int) or not 1 <= Q <= K:
        raise ValueError(f"q_len must be an int in [1, K={K}] (or None for Q = K), got {q_len!r}")

    r = key_ranks(s)[:, :, None, :]                     # [B, Hkv, 1, K]
    p = query_positions(Q, K, s.device)[:, None]        # [Q, 1]
    j = torch.arange(K, device=s.device)[None, :]       # [1, K]
    past = (j <= p) if causal else torch.ones(Q, K, dtype=torch.bool, device=s.device)

    if mode == "global" or not causal:
        # One key set T = the w best keys of all K (non-causal row mode is the same set).
        return (r < w) & past

    # Row mode, causal: rank the keys of each row's past and keep the best min(w, p + 1).
    r_past = torch.where(past, r, torch.full_like(r, K))               # future keys rank last
    nth = torch.sort(r_past, dim=-1).values                            # [B, Hkv, Q, K]
    kth = torch.clamp(p + 1, max=w) - 1                                # [Q, 1] index of the w-th
    threshold = torch.gather(nth, -1, kth.expand(B, Hkv, Q, 1))        # w-th best rank of the row
    return (r_past <= threshold) & past
