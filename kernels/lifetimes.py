"""Key lifetimes ``e_j`` of the causal row-mode mask, built with tensor ops on s's device.

DESIGN.md section 3.5: with ``r_j`` the rank of key j (0 = best, by ``(s_j, j)`` descending) and
``theta_p`` the w-th smallest rank among ``{j <= p}`` (``K`` while fewer than w keys exist),

    keep(p, j)  <=>  j <= p < e_j,      e_j = max(j, first p with theta_p < r_j)   (K if none).

``dma_ref.lifetimes`` computes ``theta`` with a heap, one key at a time. Here it is computed in
parallel, without a Python loop over keys and without any K x K tensor:

1. Cut the keys into blocks of ``C``. ``L_b`` = the w best ranks of block b (sorted, padded with
   K). An inclusive Hillis-Steele scan of ``merge(A, B) = w smallest of A ∪ B`` (log2(K / C)
   levels) turns ``L_b`` into the w best ranks of blocks ``0..b``; shifting by one block gives
   ``T_b``, the w best ranks of the keys *before* block b. (To save work the scan runs over
   coarse blocks of ``C1`` keys; each fine block then merges its coarse block's ``T`` with the
   coarse block's keys before it.)
2. Inside block b, ``theta_p`` is the w-th smallest of ``T_b ∪ X_p`` with ``X_p`` the block's keys
   up to p (``|X_p| <= C``). The ``w - m`` best of ``T_b`` are certainly
   before the w-th smallest of that union when ``m = min(w, C + 1)`` (each has at most
   ``w - m - 1 + C <= w - 2`` smaller elements), so ``theta_p`` = the m-th smallest of
   ``worst_m(T_b) ∪ X_p``: a ``[C, m + C]`` candidate table per block, O(K (m + C)) work.
3. ``theta`` never increases, so ``first p with theta_p < r_j`` is one ``searchsorted``.

Work O(K w log(K / C) + K C) and memory O(K w / C + K C) per head; equal to
``dma_ref.key_lifetimes`` exactly, ties included (ranks are distinct integers).
"""

from __future__ import annotations

import torch

from dma_ref.mask import key_ranks
from dma_ref.validate import check_tensor, check_window

__all__ = ["build_lifetimes", "global_lifetimes", "running_threshold_scan"]


def _merge_smallest(a: torch.Tensor, b: torch.Tensor, w: int) -> torch.Tensor:
    """The w smallest of ``a ∪ b`` along the last dim, ascending. a, b ``[..., w]``."""
    return torch.sort(torch.cat([a, b], dim=-1), dim=-1).values[..., :w]


def _exclusive_topw(rb: torch.Tensor, w: int, big: int) -> torch.Tensor:
    """``T [BH, n, w]``: the w best ranks (ascending, padded with ``big``) of the keys before each
    block, from the blocks' ranks ``rb [BH, n, C]``: a log-depth inclusive Hillis-Steele scan of
    ``merge`` over the blocks' own top-w lists, shifted by one block."""
    BH, n, C = rb.shape
    L = torch.sort(rb, dim=-1).values
    L = L[..., :w] if C >= w else torch.cat(
        [L, torch.full((BH, n, w - C), big, dtype=L.dtype, device=L.device)], dim=-1)
    d = 1
    while d < n:
        L = torch.cat([L[:, :d], _merge_smallest(L[:, d:], L[:, :-d], w)], dim=1)
        d *= 2
    return torch.cat([torch.full((BH, 1, w), big, dtype=L.dtype, device=L.device), L[:, :-1]],
                     dim=1)


def running_threshold_scan(r: torch.Tensor, w: int, block: int = 64,
                           coarse: int = 1024) -> torch.Tensor:
    """``theta [BH, K]``: the w-th smallest rank among ``r[:, :p + 1]`` (``K`` while p + 1 < w).

    r: int ``[BH, K]``, each row a permutation of ``0..K-1``; 1 <= w < K. ``block`` = C, the
    fine block; ``coarse`` = C1 (a multiple of C): the scan runs over coarse blocks only and the
    top-w before each fine block is the w best of (top-w before its coarse block) ∪ (the coarse
    block's keys before it), one sort of ``[K / C, w + C1]`` instead of log2(K / C) of them.
    """
    BH, K = r.shape
    C = max(1, min(block, K))
    C1 = max(C, (coarse // C) * C)
    n1 = -(-K // C1)
    nf = C1 // C
    nB = n1 * nf
    big = K                                               # "no key": worse than every rank
    rp = torch.full((BH, nB * C), big, dtype=torch.int32, device=r.device)
    rp[:, :K] = r.to(torch.int32)
    rb = rp.view(BH, nB, C)

    # 1. T_b: the w best ranks before each fine block.
    if n1 == 1 or nf == 1:
        T = _exclusive_topw(rb, w, big)
    else:
        r1 = rp.view(BH, n1, C1)
        T1 = _exclusive_topw(r1, w, big)                               # [BH, n1, w]
        ar = torch.arange(C1, device=r.device)
        before = ar[None, :] < (torch.arange(nf, device=r.device) * C)[:, None]     # [nf, C1]
        pre = torch.where(before, r1[:, :, None, :], big)              # [BH, n1, nf, C1]
        cand = torch.cat([T1[:, :, None, :].expand(-1, -1, nf, -1), pre], dim=-1)
        T = torch.sort(cand, dim=-1).values[..., :w].reshape(BH, nB, w)

    # 2. Inside a block: the m worst of T_b plus the block's keys seen so far (m = C + 1, not C:
    #    with m = C the w-th smallest itself could be dropped when all C block keys beat it).
    m = min(w, C + 1)
    worst = T[..., w - m:]                                            # [BH, nB, m]
    seen = torch.arange(C, device=r.device)[None, :] <= torch.arange(C, device=r.device)[:, None]
    X = torch.where(seen, rb[:, :, None, :], big)                     # [BH, nB, C(p), C(key)]
    cand = torch.cat([worst[:, :, None, :].expand(-1, -1, C, -1), X], dim=-1)
    theta = torch.kthvalue(cand, m, dim=-1).values                    # [BH, nB, C]
    return theta.reshape(BH, nB * C)[:, :K]


def build_lifetimes(s: torch.Tensor, window: int, *, block: int = 64,
                    coarse: int = 1024) -> torch.Tensor:
    """int64 ``[B, Hkv, K]``: ``e_j`` with ``keep(p, j) <=> j <= p < e_j`` (causal row mode).

    s ``[B, Hkv, K]`` (float, no NaN), window = w >= 1. Equals ``dma_ref.key_lifetimes``.
    ``w >= K`` gives ``e = K`` (nothing is ever evicted). ``block``, ``coarse``: the scan's block
    sizes (see ``running_threshold_scan``); they change the speed, never the result.
    """
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    w = check_window(window)
    B, H, K = s.shape
    if w >= K or K == 0:
        return torch.full((B, H, K), K, dtype=torch.int64, device=s.device)
    r = key_ranks(s).reshape(B * H, K)
    theta = running_threshold_scan(r, w, block, coarse)
    # First p with theta_p < r_j <=> first p with -theta_p > -r_j; -theta is non-decreasing.
    first_evict = torch.searchsorted(-theta.to(torch.int64).contiguous(), -r.contiguous(),
                                     right=True)
    e = torch.maximum(torch.arange(K, device=s.device)[None, :], first_evict)
    return e.reshape(B, H, K)


def global_lifetimes(s: torch.Tensor, window: int) -> torch.Tensor:
    """int64 ``[B, Hkv, K]``: the lifetimes of the causal global-mode mask.

    One key set ``T`` = the w best keys of all K; ``keep(p, j) <=> j <= p and j in T``, i.e.
    ``e_j = K`` for members of T and ``e_j = j`` (never admitted) for the others.
    """
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    w = check_window(window)
    K = s.shape[-1]
    j = torch.arange(K, device=s.device).expand_as(s)
    return torch.where(key_ranks(s) < w, torch.full_like(j, K), j).contiguous()
