"""Per-query-block key lists: which keys a block of ``BQ`` query positions must visit.

Query block b holds rows ``[b BQ, min(Q, (b + 1) BQ))``, positions ``p0 .. p1``
(``p = K - Q + i``). With lifetimes ``e`` (``keep(p, j) <=> j <= p < e_j``) the keys kept by
some position of the block are (``dma_ref.tiling.union_keys``)

    U_b = {j <= p1 : e_j > max(j, p0)}  =  [p0, p1]  ∪  {j < p0 : e_j > p0}.
              diagonal range (contiguous) ─┘        └─ off-diagonal list (<= w keys)

The kernels read the diagonal range contiguously and the off-diagonal list by index. Every key of
the list is kept at position p0, so a list never holds more than w keys: each block owns a slot
of ``W = min(w, K)`` entries and no size has to travel back to the host.

In ranks (ranks.py): ``e_j > p0`` for ``j < p0`` says ``r_j <= theta_p0``, so the list is

    {j < p0 : r_j <= theta_p0}      (global mode: theta = w - 1 everywhere),

the keys before p0 among the ``theta_p0 + 1`` best. ``block_lists_kernel`` walks the positions
``0 .. p0 - 1`` testing the rank (position order) while ``p0^2 <= w K``, else the ranks
``0 .. theta_p0`` (in ``order``) testing the position (rank order). With ``theta_p ~ w K / p`` on
random scores that is at most ``sqrt(w K)`` keys per block, O(w K log(K / w) / BQ) in all.

``KeyPlan`` bundles what both kernels consume for one call: the mode flags, ``e`` (int32) and
the lists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from dma_ref.mask import key_order
from dma_ref.numerics import cdiv
from dma_ref.validate import check_mode, check_tensor, check_window

from .ranks import (
    E_BLOCK,
    KeyRanks,
    global_lifetimes_from_ranks,
    lifetimes_from_thresholds,
    lifetimes_of,
    on_triton,
    rank_keys,
    thresholds_unchecked,
)

__all__ = ["KeyPlan", "block_key_lists", "build_plan", "plan_shapes", "replan", "topw_key_lists"]


@dataclass
class KeyPlan:
    """The key structure of one attention call (shapes for ``BH = B * Hkv`` heads).

    causal: test ``j <= p``; dense: no lists, every block visits its past keys contiguously
    (``w >= K``: no selection at all; or ``2 w >= K``, see ``build_plan``); window: w; e: int32
    ``[BH, K]`` lifetimes (causal modes with ``w < K``; empty otherwise); idx: int32 key ids;
    start int64, count int32 ``[BH, nQB]``: block b of head bh visits ``idx[start : start +
    count]`` (then, if causal, the diagonal range ``[p0, p1]``).
    """

    causal: bool
    dense: bool
    window: int
    block_q: int
    n_qb: int
    e: torch.Tensor
    idx: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor

    @property
    def use_e(self) -> bool:
        """Whether the kernels test ``p < e_j`` (a causal selection)."""
        return self.causal and self.e.numel() > 0


LIST_TILE = 1024                          # keys per step of a list's walk


@triton.jit
def _block_list(R, ORDER, THETA, IDX, START, CNT, n_k, p_first, n_qb, W, block_q, w, b, bh,
                GLOBAL: tl.constexpr, TILE: tl.constexpr):
    """The list of query block b of head bh, written to ``IDX[(bh n_qb + b) W:]``.

    R, ORDER int32 ``[BH, K]`` (ranks, keys by rank); THETA int32 ``[BH, K]`` (row mode; unused
    with GLOBAL); START int64 and CNT int32 ``[BH, n_qb]`` out.
    """
    p0 = p_first + b * block_q
    w = w + 0 * p0                       # a tensor even when Triton makes w = 1 a constant
    out = IDX + (bh * n_qb + b) * W
    if GLOBAL:
        theta = w - 1
    else:
        theta = tl.load(THETA + bh * n_k + p0)          # >= K: fewer than w keys, all kept
    n_r = tl.minimum(theta + 1, n_k)                    # the ranks that can be kept at p0
    # Walk the shorter sequence, judged without theta: theta's value (a rank among all K keys)
    # moves with later scores, and the list's order must not (bit-exact causality). On random
    # scores theta_p0 + 1 ~ w K / p0 (global mode: w).
    if GLOBAL:
        by_position = p0 <= w
    else:
        by_position = p0.to(tl.int64) * p0 <= w.to(tl.int64) * n_k
    n = p0 * 0
    if by_position:                                     # walk the positions before p0
        for j0 in range(0, p0, TILE):
            j = j0 + tl.arange(0, TILE)
            r = tl.load(R + bh * n_k + j, mask=j < p0, other=n_k)
            keep = (j < p0) & (r <= theta)
            tl.store(out + n + tl.cumsum(keep.to(tl.int32), 0) - 1, j, mask=keep)
            n += tl.sum(keep.to(tl.int32), 0)
    else:                                               # walk the n_r best keys
        for r0 in range(0, n_r, TILE):
            r = r0 + tl.arange(0, TILE)
            j = tl.load(ORDER + bh * n_k + r, mask=r < n_r, other=n_k)
            keep = (r < n_r) & (j < p0)
            tl.store(out + n + tl.cumsum(keep.to(tl.int32), 0) - 1, j, mask=keep)
            n += tl.sum(keep.to(tl.int32), 0)
    tl.store(CNT + bh * n_qb + b, n)
    tl.store(START + bh * n_qb + b, (bh * n_qb + b) * W)       # int64: BH nQB W may pass 2^31


@triton.jit
def block_lists_kernel(R, ORDER, THETA, IDX, START, CNT, n_k, p_first, n_qb, W, block_q, w,
                       GLOBAL: tl.constexpr, TILE: tl.constexpr):
    """One program: the list of query block b = program 0 of head bh = program 1."""
    _block_list(R, ORDER, THETA, IDX, START, CNT, n_k, p_first, n_qb, W, block_q, w,
                tl.program_id(0), tl.program_id(1).to(tl.int64), GLOBAL, TILE)


@triton.jit
def plan_kernel(R, ORDER, THETA, E, IDX, START, CNT, n_k, p_first, n_qb, W, block_q, w, n_eb,
                LOG_K: tl.constexpr, E_BLOCK: tl.constexpr, TILE: tl.constexpr):
    """Row mode, one launch for both consumers of theta: programs ``[0, n_eb)`` compute the
    lifetimes (ranks.py), the next ``n_qb`` the key lists (launches cost the host ~60 us
    each on the H200's machine, more than either part's GPU time at N <= 16K)."""
    i = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    if i < n_eb:
        lifetimes_of(R, THETA, E, n_k, i, bh, LOG_K, E_BLOCK)
    else:
        _block_list(R, ORDER, THETA, IDX, START, CNT, n_k, p_first, n_qb, W, block_q, w,
                    i - n_eb, bh, False, TILE)


def _list_buffers(BH: int, n_qb: int, W: int, dev: torch.device):
    """Uninitialised ``(idx int32 [BH * nQB * W], start int64 [BH, nQB],
    count int32 [BH, nQB])``."""
    return (torch.empty(BH * n_qb * W, dtype=torch.int32, device=dev),
            torch.empty(BH, n_qb, dtype=torch.int64, device=dev),
            torch.empty(BH, n_qb, dtype=torch.int32, device=dev))


def block_key_lists(ranks: KeyRanks, theta: torch.Tensor | None, q_len: int, block_q: int,
                    window: int, *, tile: int = LIST_TILE):
    """Off-diagonal key lists of every query block, one fixed slot of ``W = min(w, K)`` each.

    ranks: ``ranks.rank_keys(s)``; theta int32 ``[BH, K]`` (``ranks.thresholds_unchecked``;
    None: global mode); q_len = Q <= K; block_q = BQ positions per block; window = w. Returns
    ``(idx int32 [BH * nQB * W], start int64 [BH, nQB], count int32 [BH, nQB])``: block b of
    head bh lists ``{j < p0_b : e_j > p0_b}`` in ``idx[start : start + count]`` (in position
    or in rank order), and ``idx`` beyond ``count`` is unused. ``tile``: keys per step, a power
    of two (the speed only). One launch.
    """
    BH, K = ranks.r.shape
    Q, BQ = q_len, block_q
    n_qb = cdiv(Q, BQ)
    W = max(1, min(window, K))
    dev = ranks.r.device
    if tile < 2 or tile & (tile - 1):
        raise ValueError(f"tile={tile} must be a power of two >= 2")
    idx, start, count = _list_buffers(BH, n_qb, W, dev)
    block_lists_kernel[(n_qb, BH)](ranks.r, ranks.order, ranks.r if theta is None else theta,
                                   idx, start, count, K, K - Q, n_qb, W, BQ, window,
                                   GLOBAL=theta is None, TILE=tile, num_warps=4)
    return idx, start, count


def topw_key_lists(s: torch.Tensor, window: int, n_qb: int):
    """Non-causal selection: every query keeps ``T`` = the w best keys of all K.

    s ``[B, Hkv, K]``. Returns the same ``(idx, start, count)`` triple as ``block_key_lists``,
    every block of head bh pointing at the same ascending list of ``min(w, K)`` keys.
    """
    B, H, K = s.shape
    W = min(window, K)
    keys = torch.sort(key_order(s).reshape(B * H, K)[:, :W], dim=-1).values
    idx = keys.reshape(-1).to(torch.int32)
    start = (torch.arange(B * H, device=s.device) * W)[:, None].expand(B * H, n_qb)
    count = torch.full((B * H, n_qb), W, dtype=torch.int32, device=s.device)
    return idx, start.contiguous(), count


def plan_shapes(BH: int, K: int, q_len: int, window: int, *, causal: bool, block_q: int,
                lists: bool | None = None) -> tuple[bool, dict]:
    """``(dense, {"e", "idx", "start", "count": (shape, dtype)})`` of the plan ``build_plan``
    makes for ``BH = B * Hkv`` heads, from the sizes alone (the fake tensors of the custom
    operator in op.py use it; no size ever depends on the scores)."""
    n_qb = cdiv(q_len, block_q)
    none = ((0,), torch.int32)
    lists_of = {"start": ((BH, n_qb), torch.int64), "count": ((BH, n_qb), torch.int32)}
    if window >= K:                                         # no selection at all
        return True, {"e": none, "idx": none, "start": none, "count": none}
    if not causal:                                          # one top-w list per head
        return False, {"e": none, "idx": ((BH * window,), torch.int32), **lists_of}
    e = ((BH, K), torch.int32)
    if lists is False or (lists is None and 2 * window >= K):
        return True, {"e": e, "idx": none, "start": none, "count": none}
    return False, {"e": e, "idx": ((BH * n_qb * window,), torch.int32), **lists_of}


def build_plan(s: torch.Tensor, window: int, q_len: int, *, causal: bool = True,
               mode: str = "row", block_q: int = 64, lists: bool | None = None) -> KeyPlan:
    """Everything the kernels need to know about the mask, for ``Q = q_len`` query rows.

    s ``[B, Hkv, K]``; no Q x K tensor. Causal with ``w < K``: per-block key lists, O(K + nQB w)
    memory, unless ``2 w >= K`` (or ``lists=False``): then no lists, the kernels visit every past
    key and test ``j <= p < e_j`` (at most twice the union's work there, and O(K) memory instead
    of up to ``K^2 / (2 BLOCK_Q)`` list entries). ``lists=True`` forces the lists (the
    deterministic backward needs them). Needs s on a CUDA device or the Triton interpreter
    (``dma_ref.setup_device()`` on a CPU). The values of s are not checked here (that costs a
    host sync): ``dma_attention`` checks them before it calls this.
    """
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    window = check_window(window)
    check_mode(mode)
    if isinstance(q_len, bool) or not isinstance(q_len, int) or not 1 <= q_len <= s.shape[-1]:
        raise ValueError(f"q_len must be an int in [1, K={s.shape[-1]}], got {q_len!r}")
    if not on_triton(s):
        raise RuntimeError(f"s is on {s.device}: the mask builder runs Triton kernels; it needs a "
                           "CUDA device, or TRITON_INTERPRET=1 set before dma_ref.kernels is "
                           "imported (call dma_ref.setup_device() first)")
    B, H, K = s.shape
    n_qb = cdiv(q_len, block_q)
    dense, _shapes = plan_shapes(B * H, K, q_len, window, causal=causal, block_q=block_q,
                                lists=lists)

    def empty():
        return torch.empty(0, dtype=torch.int32, device=s.device)

    def make(*, causal: bool, dense: bool, e=None, idx=None, start=None, count=None) -> KeyPlan:
        return KeyPlan(causal=causal, dense=dense, window=window, block_q=block_q, n_qb=n_qb,
                       e=empty() if e is None else e, idx=empty() if idx is None else idx,
                       start=empty() if start is None else start,
                       count=empty() if count is None else count)

    if window >= K:                                         # no selection at all
        return make(causal=causal, dense=True)
    if not causal:                                          # row and global modes coincide
        idx, start, count = topw_key_lists(s, window, n_qb)
        return make(causal=False, dense=False, idx=idx, start=start, count=count)
    ranks = rank_keys(s)
    if mode == "global":
        e = global_lifetimes_from_ranks(ranks.r, window)
        if dense:
            return make(causal=True, dense=True, e=e)
        idx, start, count = block_key_lists(ranks, None, q_len, block_q, window)
        return make(causal=True, dense=False, e=e, idx=idx, start=start, count=count)
    theta = thresholds_unchecked(ranks, window)                         # int32 [BH, K]
    if dense:
        return make(causal=True, dense=True, e=lifetimes_from_thresholds(ranks.r, theta))
    BH = B * H
    e = torch.empty(BH, K, dtype=torch.int32, device=s.device)
    idx, start, count = _list_buffers(BH, n_qb, window, s.device)
    n_eb = cdiv(K, E_BLOCK)
    plan_kernel[(n_eb + n_qb, BH)](ranks.r, ranks.order, theta, e, idx, start, count, K,
                                   K - q_len, n_qb, window, block_q, window, n_eb,
                                   LOG_K=K.bit_length(), E_BLOCK=E_BLOCK, TILE=LIST_TILE,
                                   num_warps=4)
    return make(causal=True, dense=False, e=e, idx=idx, start=start, count=count)


def replan(plan: KeyPlan, Q: int, block_q: int, s: torch.Tensor, mode: str) -> KeyPlan:
    """The same selection with key lists for another query block size (the backward's tile
    may hold fewer rows than the forward's); s ``[B, Hkv, K]`` is ranked again for them."""
    if plan.block_q == block_q:
        return plan
    n_qb = cdiv(Q, block_q)
    if plan.dense:
        return replace(plan, block_q=block_q, n_qb=n_qb)
    if not plan.causal:                       # every block lists the same top-w set
        BH = plan.start.shape[0]
        start = plan.start[:, :1].expand(BH, n_qb).contiguous()
        count = plan.count[:, :1].expand(BH, n_qb).contiguous()
        return replace(plan, block_q=block_q, n_qb=n_qb, start=start, count=count)
    ranks = rank_keys(s)
    theta = thresholds_unchecked(ranks, plan.window) if mode == "row" else None
    idx, start, count = block_key_lists(ranks, theta, Q, block_q, plan.window)
    return replace(plan, block_q=block_q, n_qb=n_qb, idx=idx, start=start, count=count)
