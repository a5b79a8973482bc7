"""Per-query-block key lists: which keys a block of ``BQ`` query positions must visit.

Query block b holds rows ``[b BQ, min(Q, (b + 1) BQ))``, positions ``p0 .. p1``
(``p = K - Q + i``). With lifetimes ``e`` (``keep(p, j) <=> j <= p < e_j``) the keys kept by
some position of the block are (``dma_ref.tiling.union_keys``)

    U_b = {j <= p1 : e_j > max(j, p0)}  =  [p0, p1]  ∪  {j < p0 : e_j > p0}.
              diagonal range (contiguous) ─┘        └─ off-diagonal list (<= w keys)

The kernels read the diagonal range contiguously and the off-diagonal list by index. The lists
of all blocks are one CSR structure, built without a Q x K tensor: key j belongs to the list of
every block with ``j < p0_b < e_j``, a contiguous range of blocks ``[lo_j, hi_j]`` (``p0_b`` grows
with b); we expand those ranges (total size = the total list length) and sort by block.

``KeyPlan`` bundles what both kernels consume for one call: the mode flags, ``e`` (int32) and
the lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dma_ref.mask import key_ranks

from .lifetimes import build_lifetimes, global_lifetimes

__all__ = ["KeyPlan", "block_key_lists", "build_plan", "topw_key_lists"]


@dataclass
class KeyPlan:
    """The key structure of one attention call (shapes for ``BH = B * Hkv`` heads).

    causal: test ``j <= p``; dense: no selection (``w >= K``), keys are visited contiguously and
    ``e``/lists are unused; e: int32 ``[BH, K]`` lifetimes (causal sparse modes only);
    idx: int32 ``[total]`` key ids; start, count: int32 ``[BH, nQB]``: block b of head bh visits
    ``idx[start : start + count]`` (then, if causal, the diagonal range ``[p0, p1]``).
    """

    causal: bool
    dense: bool
    block_q: int
    n_qb: int
    e: torch.Tensor
    idx: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor


def block_key_lists(e: torch.Tensor, q_len: int, block_q: int):
    """Off-diagonal key lists of every query block, as CSR.

    e: int ``[BH, K]`` lifetimes; q_len = Q <= K; block_q = BQ positions per block.
    Returns ``(idx int32 [total], start int32 [BH, nQB], count int32 [BH, nQB])``; block b of
    head bh lists ``idx[start[bh, b] : start[bh, b] + count[bh, b]]`` = ``{j < p0_b : e_j > p0_b}``,
    ascending, at most w entries each.
    """
    BH, K = e.shape
    Q, BQ = q_len, block_q
    n_qb = -(-Q // BQ)
    dev = e.device
    P0 = K - Q                                              # position of query row 0
    j = torch.arange(K, device=dev)
    # Blocks with j < p0_b:  b >= lo_j;  blocks with p0_b < e_j:  b <= hi_j.
    lo = torch.div(j - P0, BQ, rounding_mode="floor").add(1).clamp(min=0).expand(BH, K)
    hi = torch.div(e.to(torch.int64) - 1 - P0, BQ, rounding_mode="floor").clamp(max=n_qb - 1)
    n = (hi - lo + 1).clamp(min=0)                          # blocks listing key j
    count = torch.zeros(BH, n_qb + 1, dtype=torch.int64, device=dev)
    has = n > 0
    count.scatter_add_(1, torch.where(has, lo, n_qb), has.to(torch.int64))
    count.scatter_add_(1, torch.where(has, hi + 1, n_qb), -has.to(torch.int64))
    count = torch.cumsum(count, 1)[:, :n_qb]
    flat_n = n.reshape(-1)
    key = torch.repeat_interleave(torch.arange(BH * K, device=dev), flat_n)   # bh*K + j, ascending
    first = torch.cumsum(flat_n, 0) - flat_n
    b = lo.reshape(-1)[key] + (torch.arange(key.numel(), device=dev) - first[key])
    bh = torch.div(key, K, rounding_mode="floor")
    order = torch.sort(bh * n_qb + b, stable=True).indices  # by block; j stays ascending inside
    idx = (key[order] % K).to(torch.int32)
    start = (torch.cumsum(count.reshape(-1), 0) - count.reshape(-1)).reshape(BH, n_qb)
    return idx, start.to(torch.int32), count.to(torch.int32)


def topw_key_lists(s: torch.Tensor, window: int, n_qb: int):
    """Non-causal selection: every query keeps ``T`` = the w best keys of all K.

    s ``[B, Hkv, K]``. Returns the same CSR triple as ``block_key_lists``, every block of head
    bh pointing at the same ascending list of ``min(w, K)`` keys.
    """
    B, H, K = s.shape
    W = min(window, K)
    keys = torch.sort(torch.sort(key_ranks(s).reshape(B * H, K), dim=-1).indices[:, :W],
                      dim=-1).values
    idx = keys.reshape(-1).to(torch.int32)
    start = (torch.arange(B * H, device=s.device) * W)[:, None].expand(B * H, n_qb)
    count = torch.full((B * H, n_qb), W, dtype=torch.int32, device=s.device)
    return idx, start.to(torch.int32).contiguous(), count


def build_plan(s: torch.Tensor, window: int, q_len: int, *, causal: bool = True,
               mode: str = "row", block_q: int = 64) -> KeyPlan:
    """Everything the kernels need to know about the mask, for ``Q = q_len`` query rows.

    s ``[B, Hkv, K]``; O(K + total list length) memory, no Q x K tensor.
    """
    B, H, K = s.shape
    n_qb = -(-q_len // block_q)
    empty = torch.zeros(0, dtype=torch.int32, device=s.device)
    if window >= K:                                         # no selection at all
        return KeyPlan(causal, True, block_q, n_qb, empty, empty, empty, empty)
    if not causal:                                          # row and global modes coincide
        idx, start, count = topw_key_lists(s, window, n_qb)
        return KeyPlan(False, False, block_q, n_qb, empty, idx, start, count)
    e = build_lifetimes(s, window) if mode == "row" else global_lifetimes(s, window)
    e = e.reshape(B * H, K)
    idx, start, count = block_key_lists(e, q_len, block_q)
    return KeyPlan(True, False, block_q, n_qb, e.to(torch.int32).contiguous(), idx, start, count)
