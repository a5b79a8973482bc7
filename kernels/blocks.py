"""Per-query-block key lists: which keys a block of ``BQ`` query positions must visit.

Query block b holds rows ``[b BQ, min(Q, (b + 1) BQ))``, positions ``p0 .. p1``
(``p = K - Q + i``). With lifetimes ``e`` (``keep(p, j) <=> j <= p < e_j``) the keys kept by
some position of the block are (``dma_ref.tiling.union_keys``)

    U_b = {j <= p1 : e_j > max(j, p0)}  =  [p0, p1]  ∪  {j < p0 : e_j > p0}.
              diagonal range (contiguous) ─┘        └─ off-diagonal list (<= w keys)

The kernels read the diagonal range contiguously and the off-diagonal list by index. Every key of
the list is kept at position p0, so a list never holds more than w keys: each block owns a slot
of ``W = min(w, K)`` entries and no size has to travel back to the host.

Filling block b's slot, without a Q x K tensor and without scanning all p0 earlier keys: cut the
keys into chunks of ``CH`` and sort each chunk by ``e`` descending, once for all blocks. Inside a
chunk that lies wholly before p0 the list members (``e_j > p0``) are then a prefix, whose length
is one binary search per (chunk, block). ``block_lists_kernel`` finds those lengths, copies the
prefixes one after the other, then scans the one chunk that straddles p0 key by key.

``KeyPlan`` bundles what both kernels consume for one call: the mode flags, ``e`` (int32) and
the lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from dma_ref.mask import key_order
from dma_ref.validate import check_mode, check_tensor, check_window

from .hostmath import next_pow2
from .lifetimes import _on_triton, global_lifetimes_unchecked, lifetimes_unchecked

__all__ = ["KeyPlan", "block_key_lists", "build_plan", "plan_shapes", "topw_key_lists"]


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


@triton.jit
def block_lists_kernel(E, E_SORTED, ORDER, IDX, START, CNT, n_k, p_first, n_qb, W, block_q,
                       n_full, CH: tl.constexpr, NCH: tl.constexpr, LOG_CH: tl.constexpr,
                       TILE: tl.constexpr):
    """One program: the list of query block b of head bh, written to ``IDX[(bh n_qb + b) W:]``.

    E int32 ``[BH, K]`` lifetimes; E_SORTED, ORDER ``[BH, n_full, CH]``: the e of each full chunk
    sorted descending and their positions inside the chunk (int64); START int64 and CNT int32
    ``[BH, n_qb]`` out.
    """
    b = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    p0 = p_first + b * block_q
    out = IDX + (bh * n_qb + b) * W
    # Members of each chunk wholly before p0 (e > p0): a prefix of the sorted chunk, whose length
    # a binary search finds, all chunks at once (NCH lanes, LOG_CH steps).
    c = tl.arange(0, NCH)
    before = (c < n_full) & ((c + 1) * CH <= p0)
    row = E_SORTED + (bh * n_full + c) * CH
    ln = tl.zeros([NCH], tl.int32)
    for it in tl.static_range(LOG_CH):
        half = CH >> (it + 1)
        e_mid = tl.load(row + ln + (half - 1), mask=before, other=0)
        ln += tl.where(e_mid > p0, half, 0)
    ln += (tl.load(row + ln, mask=before, other=0) > p0).to(tl.int32)
    ln = tl.where(before, ln, 0)
    # The prefixes, concatenated: slot t belongs to the chunk whose inclusive end passes t.
    end = tl.cumsum(ln, 0)
    total = tl.sum(ln, 0)
    for t0 in range(0, total, TILE):
        t = t0 + tl.arange(0, TILE)
        done = end[None, :] <= t[:, None]                               # [TILE, NCH]
        chunk = tl.sum(done.to(tl.int32), 1)
        first = tl.max(tl.where(done, end[None, :], 0), 1)              # slot of its first member
        local = tl.load(ORDER + (bh * n_full + chunk) * CH + (t - first), mask=t < total)
        tl.store(out + t, (chunk * CH + local).to(tl.int32), mask=t < total)
    # The chunk that straddles p0: its keys before p0, in position order.
    n = total
    for j0 in range((p0 // CH) * CH, p0, TILE):
        j = j0 + tl.arange(0, TILE)
        e = tl.load(E + bh * n_k + j, mask=j < p0, other=0)
        keep = (j < p0) & (e > p0)
        slot = n + tl.cumsum(keep.to(tl.int32), 0) - 1
        tl.store(out + slot, j, mask=keep)
        n += tl.sum(keep.to(tl.int32), 0)
    tl.store(CNT + bh * n_qb + b, n)
    tl.store(START + bh * n_qb + b, (bh * n_qb + b) * W)                # int64: BH nQB W may pass 2^31


def chunk_size(K: int, tile: int = 128) -> int:
    """The default CH: the smallest power of two >= ``tile`` that cuts K into at most 64 chunks."""
    return max(tile, next_pow2(-(-K // 64)))


def block_key_lists(e: torch.Tensor, q_len: int, block_q: int, window: int, *,
                    chunk: int | None = None, tile: int = 128):
    """Off-diagonal key lists of every query block, one fixed slot of ``W = min(w, K)`` each.

    e: int ``[BH, K]`` lifetimes (row or global mode); q_len = Q <= K; block_q = BQ positions
    per block; window = w. Returns ``(idx int32 [BH * nQB * W], start int64 [BH, nQB],
    count int32 [BH, nQB])``: block b of head bh lists ``{j < p0_b : e_j > p0_b}`` in
    ``idx[start : start + count]`` (chunk by chunk; inside a chunk by e descending, then j), and
    ``idx`` beyond ``count`` is unused. ``chunk`` (CH), ``tile``: powers of two, CH a multiple of
    the tile; they change the speed and the order inside a list, never its set of keys.

    Two launches (the sort of the full chunks, ``block_lists_kernel``; a third, a copy, when CH
    does not divide K): at the sizes of interest the cost is launches, not work.
    """
    BH, K = e.shape
    Q, BQ = q_len, block_q
    n_qb = -(-Q // BQ)
    W = max(1, min(window, K))
    dev = e.device
    CH = chunk or chunk_size(K, tile)
    if CH % tile or CH & (CH - 1):
        raise ValueError(f"chunk={CH} must be a power of two and a multiple of tile={tile}")
    e = e if e.dtype == torch.int32 and e.is_contiguous() else e.to(torch.int32).contiguous()
    # Only full chunks are sorted: a chunk wholly before p0 is always full (p0 < K), and the one
    # that straddles p0 is scanned key by key.
    n_full = K // CH
    if n_full:
        e_sorted, order = torch.sort(e[:, :n_full * CH].reshape(BH, n_full, CH), dim=-1,
                                     descending=True, stable=True)   # stable: a fixed list order
    else:
        e_sorted = order = e                                        # never read
    idx = torch.empty(BH * n_qb * W, dtype=torch.int32, device=dev)
    start = torch.empty(BH, n_qb, dtype=torch.int64, device=dev)
    count = torch.empty(BH, n_qb, dtype=torch.int32, device=dev)
    block_lists_kernel[(n_qb, BH)](e, e_sorted, order, idx, start, count, K, K - Q, n_qb, W, BQ,
                                   n_full, CH=CH, NCH=next_pow2(max(n_full, 1)),
                                   LOG_CH=CH.bit_length() - 1, TILE=tile, num_warps=4)
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
    operator in autograd.py use it; no size ever depends on the scores)."""
    n_qb = -(-q_len // block_q)
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
    if not _on_triton(s):
        raise RuntimeError(f"s is on {s.device}: the mask builder runs Triton kernels; it needs a "
                           "CUDA device, or TRITON_INTERPRET=1 set before dma_ref.kernels is "
                           "imported (call dma_ref.setup_device() first)")
    B, H, K = s.shape
    n_qb = -(-q_len // block_q)
    dense, _shapes = plan_shapes(B * H, K, q_len, window, causal=causal, block_q=block_q,
                                lists=lists)

    def empty():
        return torch.empty(0, dtype=torch.int32, device=s.device)

    if window >= K:                                         # no selection at all
        return KeyPlan(causal, True, window, block_q, n_qb, empty(), empty(), empty(), empty())
    if not causal:                                          # row and global modes coincide
        idx, start, count = topw_key_lists(s, window, n_qb)
        return KeyPlan(False, False, window, block_q, n_qb, empty(), idx, start, count)
    if mode == "row":
        e = lifetimes_unchecked(s, window)                              # int32 [BH, K]
    else:
        e = global_lifetimes_unchecked(s, window).reshape(B * H, K).to(torch.int32)
    if dense:
        return KeyPlan(True, True, window, block_q, n_qb, e, empty(), empty(), empty())
    idx, start, count = block_key_lists(e, q_len, block_q, window)
    return KeyPlan(True, False, window, block_q, n_qb, e, idx, start, count)
