"""Key lifetimes ``e_j`` of the causal row-mode mask: key ranks, then three Triton kernels.

DESIGN.md section 3.5, in ranks: ``r_j`` is the rank of key j (0 = best, by ``(s_j, j)``
descending) and ``theta_p`` the w-th smallest rank among the keys ``j' <= p`` (the w-th best
key so far). Ranks are distinct, so key j is among the w best of the prefix p exactly when
``r_j <= theta_p``, and ``theta`` never increases with p. Hence

    keep(p, j)  <=>  j <= p  and  r_j <= theta_p  <=>  j <= p < e_j,
    e_j = max(j, first p with theta_p < r_j)          (K if none: theta_p >= r_j for every p).

Before w keys exist nothing is evicted: ``theta_p`` is then a sentinel ``>= K``.
``theta`` (K integers per head) is the whole mask; the builder computes it, then ``e`` from it:

1. ``ranks_kernel``: the ranks (inverse permutation of one sort), and a small table: for every
   chunk of ``BJ`` consecutive ranks, how many of its keys lie before each multiple of ``TB``.
   Up to ``COUNT_RANKS_MAX`` keys ``count_ranks_kernel`` replaces the sort and this kernel: it
   counts the better keys of each key (one launch) and leaves the table trivial (``TB >= K``).
2. ``thresholds_kernel``, one program per block of ``T`` positions ``[P, P + T)``. Inside the
   block at most T keys arrive, so ``theta`` there is the m-th smallest (m = min(w, T + 1)) of
   ``A' ∪ {r_P .. r_p}``, where ``A'`` = the m largest of the w best ranks before P (the
   (w - m + 1)-th to w-th order statistics of ``{r_j : j < P}``): every better rank is below
   theta throughout the block. ``A'`` is found by walking the keys in rank order from the
   chunk that the table says holds the (w - m + 1)-th of them, counting those at positions
   < P; then theta for the T positions is a [T, 2T] count (how many candidates are <= each
   candidate), no sort.
3. ``lifetimes_kernel``: ``e_j`` by a binary search of ``r_j`` in the non-increasing theta.

Work O(K log K) (the binary searches) plus the walks of step 2, about (T + 1) K / P + BJ keys
for the block at P; memory O(K). Equal to ``dma_ref.key_lifetimes`` exactly, ties included.
Global mode needs no thresholds: its theta is the constant w - 1 (``block_key_lists``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from dma_ref.lifetimes import key_lifetimes
from dma_ref.mask import key_ranks
from dma_ref.numerics import cdiv, next_pow2
from dma_ref.validate import check_score_values, check_tensor, check_window

from .launch import interpreting

__all__ = [
    "KeyRanks",
    "build_lifetimes",
    "build_thresholds",
    "count_ranks_kernel",
    "global_lifetimes",
    "global_lifetimes_from_ranks",
    "lifetimes_from_thresholds",
    "lifetimes_of",
    "on_triton",
    "rank_keys",
    "thresholds_unchecked",
]


@triton.jit
def ranks_kernel(ORDER_ASC, ORDER, R, CNT, n_k, n_tb, BJ: tl.constexpr, TB: tl.constexpr,
                 NTB: tl.constexpr):
    """One program: the ranks ``[c BJ, (c + 1) BJ)`` of head bh (rank chunk c).

    ORDER_ASC int64 ``[BH, K]``: ``sort(s, stable=True).indices``, ascending, equal scores in
    position order; read backwards it ranks by (s_j, j) descending, so that among equal scores
    the later key comes first (the tie rule). Writes ORDER int32 ``[BH, K]`` = the keys by rank
    (``dma_ref.mask.key_order``), R int32 ``[BH, K]`` = the rank of each key (``key_ranks``),
    and CNT int32 ``[BH, n_c, n_tb]``: ``CNT[c, t]`` = keys of rank chunk c at positions < t TB.
    """
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    r = c * BJ + tl.arange(0, BJ)
    ok = r < n_k
    j = tl.load(ORDER_ASC + bh * n_k + (n_k - 1 - r), mask=ok, other=0).to(tl.int32)
    tl.store(ORDER + bh * n_k + r, j, mask=ok)
    tl.store(R + bh * n_k + j, r, mask=ok)
    hist = tl.histogram(j // TB, NTB, mask=ok)
    t = tl.arange(0, NTB)
    tl.store(CNT + (bh * tl.num_programs(0) + c) * n_tb + t, tl.cumsum(hist, 0) - hist,
             mask=t < n_tb)


@triton.jit
def score_keys(S, base, j, ok):
    """int32 keys that order like the fp32 scores ``S[base + j]``: equal scores (-0.0 = 0.0)
    equal keys, NaN above +inf (it ranks first, as in the sort); rows not ``ok`` lowest."""
    s = tl.load(S + base + j, mask=ok, other=0.0).to(tl.float32)
    bits = s.to(tl.int32, bitcast=True)
    key = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    key = tl.where(s == 0.0, 0, key)
    key = tl.where((bits & 0x7FFFFFFF) > 0x7F800000, 0x7FFFFFFF, key)      # NaN
    return tl.where(ok, key, -2147483648)


@triton.jit
def count_ranks_kernel(S, ORDER, R, CNT, n_k, n_c, BJ: tl.constexpr, BC: tl.constexpr,
                       NC: tl.constexpr):
    """One program: the ranks of the keys ``[c BJ, (c + 1) BJ)`` of head bh, by counting the
    keys better than each, ``r_j = #{i : (s_i, i) > (s_j, j)}`` (O(K) per key, one launch:
    below ~8K keys cheaper than a sort and its launches).

    S ``[BH, K]`` any float dtype; ORDER, R int32 ``[BH, K]`` out as in ``ranks_kernel``; CNT int32
    ``[BH, n_c, 1]`` out, zeros (the table for ``TB >= K``: no keys before position 0).
    """
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    j = c * BJ + tl.arange(0, BJ)
    ok = j < n_k
    kj = score_keys(S, bh * n_k, j, ok)
    r = tl.zeros([BJ], tl.int32)
    for i0 in range(0, n_k, BC):
        i = i0 + tl.arange(0, BC)
        ki = score_keys(S, bh * n_k, i, i < n_k)
        # (the padding keys i >= K are lowest and i > j never holds for them with equal keys)
        better = (ki[None, :] > kj[:, None]) | ((ki[None, :] == kj[:, None]) &
                                                (i[None, :] > j[:, None]) & (i < n_k)[None, :])
        r += tl.sum(better.to(tl.int32), 1)
    tl.store(R + bh * n_k + j, r, mask=ok)
    tl.store(ORDER + bh * n_k + r, j, mask=ok)
    cidx = tl.arange(0, NC)
    tl.store(CNT + bh * n_c + cidx, tl.zeros([NC], tl.int32), mask=(cidx < n_c) & (c == 0))


@triton.jit
def thresholds_kernel(R, ORDER, CNT, AP, THETA, n_k, w, n_c, n_tb,
                      T: tl.constexpr, TB: tl.constexpr, BJ: tl.constexpr, NC: tl.constexpr,
                      TILE: tl.constexpr):
    """One program: ``theta_p`` for the T positions ``[P, P + T)``, ``P = b T``, of head bh.

    R, ORDER int32 ``[BH, K]``; CNT int32 ``[BH, n_c, n_tb]`` (ranks_kernel); AP int32
    ``[BH, n_b, 2T]`` scratch for ``A'``; THETA int32 ``[BH, K]`` out (``>= K``: fewer than w
    keys so far).
    """
    b = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    P = b * T
    m = tl.minimum(w, T + 1)
    lo = w - m                          # A' = order statistics lo .. w - 1 (0-based) before P
    hi = tl.minimum(w, P)               # only P keys lie before P
    # Keys before P in each rank chunk: the table's row at the last multiple of TB, plus the
    # keys of [that multiple, P) counted by chunk.
    cidx = tl.arange(0, NC)
    row = tl.load(CNT + (bh * n_c + cidx) * n_tb + P // TB, mask=cidx < n_c, other=0)
    for p0 in range((P // TB) * TB, P, TILE):
        pos = p0 + tl.arange(0, TILE)
        rr = tl.load(R + bh * n_k + pos, mask=pos < P, other=0)
        row += tl.histogram(rr // BJ, NC, mask=pos < P)
    before = tl.cumsum(row, 0) - row                      # keys before P in ranks < c BJ
    c0 = tl.maximum(tl.sum((before <= lo).to(tl.int32), 0) - 1, 0)
    n = tl.sum(tl.where(cidx == c0, before, 0), 0)        # counted before rank c0 BJ
    # Walk the keys in rank order from chunk c0: the (lo + 1)-th .. hi-th with position < P.
    out = AP + (bh * tl.num_programs(0) + b) * (2 * T)
    r0 = c0 * BJ
    while (n < hi) & (r0 < n_k):
        r = r0 + tl.arange(0, TILE)
        pos = tl.load(ORDER + bh * n_k + r, mask=r < n_k, other=n_k)
        q = pos < P
        nth = n + tl.cumsum(q.to(tl.int32), 0) - 1        # its index among the keys before P
        tl.store(out + (nth - lo), r, mask=q & (nth >= lo) & (nth < hi))
        n += tl.sum(q.to(tl.int32), 0)
        r0 += TILE
    tl.debug_barrier()                  # A' written by all threads, read back below
    n_a = tl.maximum(hi - lo, 0)                          # real members of A'
    lane = tl.arange(0, 2 * T)
    a = tl.load(out + lane, mask=lane < n_a, other=0, cache_modifier=".cg")
    a = tl.where(lane < n_a, a, n_k + lane)               # missing statistics: sentinels >= K
    in_a = lane < m
    t = tl.arange(0, T)
    x = tl.load(R + bh * n_k + P + t, mask=P + t < n_k, other=0)   # ranks arriving in the block
    # theta_t = the m-th smallest of A' ∪ {x_0 .. x_t}: the smallest candidate with at least m
    # members <= it. Candidates from A' (member l has l + 1 members of A' <= it) ...
    ca = (lane + 1)[None, :] + tl.cumsum((x[:, None] <= a[None, :]).to(tl.int32), 0)
    th_a = tl.min(tl.where(in_a[None, :] & (ca >= m), a[None, :], 2147483647), 1)
    # ... and the arrivals x_s, s <= t.
    x_s = tl.reshape(x, (1, T))
    below = tl.sum((in_a[None, :] & (a[None, :] <= x[:, None])).to(tl.int32), 1)   # per s
    cx = tl.reshape(below, (1, T)) + tl.cumsum((x[:, None] <= x_s).to(tl.int32), 0)
    ok_x = (tl.arange(0, T)[None, :] <= t[:, None]) & (cx >= m)
    th_x = tl.min(tl.where(ok_x, x_s, 2147483647), 1)
    tl.store(THETA + bh * n_k + P + t, tl.minimum(th_a, th_x), mask=P + t < n_k)


@triton.jit
def lifetimes_of(R, THETA, E, n_k, c, bh, LOG_K: tl.constexpr, BLOCK: tl.constexpr):
    """``e_j`` for the keys ``[c BLOCK, (c + 1) BLOCK)`` of head bh: the first p with
    ``theta_p < r_j`` (binary search: theta is non-increasing), at least j; K if none."""
    j = c * BLOCK + tl.arange(0, BLOCK)
    ok = j < n_k
    r = tl.load(R + bh * n_k + j, mask=ok, other=0)
    lo = tl.zeros([BLOCK], tl.int32)
    hi = tl.full([BLOCK], 0, tl.int32) + n_k
    for _ in tl.static_range(LOG_K):                     # the answer lies in [lo, hi]
        active = lo < hi
        mid = (lo + hi) // 2
        evicted = tl.load(THETA + bh * n_k + mid, mask=ok & active, other=0) < r
        hi = tl.where(active & evicted, mid, hi)
        lo = tl.where(active & ~evicted, mid + 1, lo)
    tl.store(E + bh * n_k + j, tl.where(lo < n_k, tl.maximum(j, lo), n_k), mask=ok)


@triton.jit
def lifetimes_kernel(R, THETA, E, n_k, LOG_K: tl.constexpr, BLOCK: tl.constexpr):
    """One program: ``e_j`` for BLOCK keys. R, THETA int32 ``[BH, K]``; E int32 ``[BH, K]`` out.
    (``build_plan`` runs the same code fused with the key lists: plan.py ``plan_kernel``.)"""
    lifetimes_of(R, THETA, E, n_k, tl.program_id(0), tl.program_id(1).to(tl.int64), LOG_K, BLOCK)


E_BLOCK = 1024                            # keys per lifetimes program
# rank_keys: up to this K the counting kernel (one launch, no torch.sort, whose host time is
# ~0.1 ms per call on the H200's machine); its keys per program and per step.
COUNT_RANKS_MAX = 8192
COUNT_BJ = 64
COUNT_BC = 128


@dataclass(frozen=True)
class KeyRanks:
    """The keys of each head ranked, as ``rank_keys`` returns them.

    order, r: int32 ``[BH, K]``, the keys by rank (best first) and the rank of each key;
    cnt: int32 ``[BH, n_c, n_tb]``, the table of ``ranks_kernel`` (keys of rank chunk c at
    positions ``< t TB``); T, TB, BJ: the block sizes it was built for (``_sizes``)."""

    order: torch.Tensor
    r: torch.Tensor
    cnt: torch.Tensor
    T: int
    TB: int
    BJ: int


def _sizes(K: int, block_t: int | None, table_t: int | None, chunk: int | None):
    """Default block sizes: T = 64 positions per thresholds program, table rows every TB >= T
    positions (at most 2048 rows), BJ ranks per chunk (at most 128 chunks)."""
    T = block_t or 64
    TB = table_t or max(T, next_pow2(cdiv(K, 2048)))
    BJ = chunk or max(64, next_pow2(cdiv(K, 128)))
    for name, v in (("block_t", T), ("table_t", TB), ("chunk", BJ)):
        if v < 2 or v & (v - 1):
            raise ValueError(f"{name}={v} must be a power of two >= 2")
    if TB % T:
        raise ValueError(f"table_t={TB} must be a multiple of block_t={T}")
    return T, TB, BJ


def rank_keys(s: torch.Tensor, *, block_t: int | None = None, table_t: int | None = None,
              chunk: int | None = None, method: str | None = None) -> KeyRanks:
    """Ranks of the keys of s ``[B, Hkv, K]``, for the thresholds and for the key lists of
    plan.py. No value check (that costs a host sync).

    ``method``: "sort" (one stable sort, then ``ranks_kernel``, which also fills the table of
    positions by rank chunk) or "count" (``count_ranks_kernel`` alone: one launch, O(K^2) work;
    its table is the trivial one, ``TB >= K``, so ``table_t`` must be None). None: "count" for
    ``K <= COUNT_RANKS_MAX`` when ``table_t`` is None, else "sort". Both give the same ranks."""
    B, Hh, K = s.shape
    BH, dev = B * Hh, s.device
    if method is None:
        method = "count" if K <= COUNT_RANKS_MAX and table_t is None else "sort"
    if method not in ("sort", "count"):
        raise ValueError(f"method must be 'sort' or 'count', got {method!r}")
    if method == "count" and table_t is not None:
        raise ValueError(f"table_t={table_t}: the 'count' method builds no table (use 'sort')")
    T, TB, BJ = _sizes(K, block_t, table_t, chunk)
    order = torch.empty(BH, K, dtype=torch.int32, device=dev)
    r = torch.empty(BH, K, dtype=torch.int32, device=dev)
    n_c = cdiv(K, BJ)
    if method == "count":
        TB = max(T, next_pow2(K))                      # one table column: keys before 0
        cnt = torch.empty(BH, n_c, 1, dtype=torch.int32, device=dev)
        count_ranks_kernel[(cdiv(K, COUNT_BJ), BH)](s.reshape(BH, K), order, r, cnt, K, n_c,
                                                    BJ=COUNT_BJ, BC=COUNT_BC,
                                                    NC=next_pow2(n_c), num_warps=4)
        return KeyRanks(order, r, cnt, T, TB, BJ)
    # key_order and key_ranks of dma_ref.mask in two launches (an ascending stable sort, read
    # backwards) rather than eight small torch ops: at N = 16K the builder is launch-bound.
    order_asc = torch.sort(s.reshape(BH, K), dim=-1, stable=True).indices
    n_tb = cdiv(K, TB)
    cnt = torch.empty(BH, n_c, n_tb, dtype=torch.int32, device=dev)
    ranks_kernel[(n_c, BH)](order_asc, order, r, cnt, K, n_tb, BJ=BJ, TB=TB,
                            NTB=next_pow2(n_tb), num_warps=4)
    return KeyRanks(order, r, cnt, T, TB, BJ)


def thresholds_unchecked(ranks: KeyRanks, w: int) -> torch.Tensor:
    """int32 ``[BH, K]``: ``theta_p``, the w-th smallest rank among keys ``<= p`` (``>= K``
    while fewer than w keys exist), for ``w < K``."""
    BH, K = ranks.r.shape
    T, dev = ranks.T, ranks.r.device
    n_b = cdiv(K, T)
    ap = torch.empty(BH, n_b, 2 * T, dtype=torch.int32, device=dev)
    theta = torch.empty(BH, K, dtype=torch.int32, device=dev)
    thresholds_kernel[(n_b, BH)](ranks.r, ranks.order, ranks.cnt, ap, theta, K, w,
                                 ranks.cnt.shape[1], ranks.cnt.shape[2], T=T, TB=ranks.TB,
                                 BJ=ranks.BJ, NC=next_pow2(ranks.cnt.shape[1]),
                                 TILE=max(64, min(1024, ranks.BJ)), num_warps=4)
    return theta


def lifetimes_from_thresholds(r: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """int32 ``[BH, K]``: ``e_j = max(j, first p with theta_p < r_j)``, K if none."""
    BH, K = r.shape
    e = torch.empty_like(r)
    lifetimes_kernel[(cdiv(K, E_BLOCK), BH)](r, theta, e, K, LOG_K=K.bit_length(),
                                            BLOCK=E_BLOCK, num_warps=4)
    return e


def on_triton(x: torch.Tensor) -> bool:
    """Whether Triton kernels can run on ``x``: it is on CUDA, or the interpreter is on."""
    return x.device.type == "cuda" or interpreting()


def build_thresholds(s: torch.Tensor, window: int, *, block_t: int | None = None,
                     table_t: int | None = None, chunk: int | None = None) -> torch.Tensor:
    """int64 ``[B, Hkv, K]``: ``theta_p``, the w-th smallest key rank among positions ``<= p``
    (rank 0 = best), or a value ``>= K`` while fewer than w keys exist; ``keep(p, j) <=>
    j <= p and rank_j <= theta_p``. s ``[B, Hkv, K]`` float (no NaN or +inf), ``1 <= w < K``
    on CUDA or under the Triton interpreter. ``block_t`` (T), ``table_t`` (TB), ``chunk`` (BJ):
    powers of two that change the speed, never the result."""
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    check_score_values(s)
    w = check_window(window)
    B, Hh, K = s.shape
    if w >= K:
        raise ValueError(f"window={w} must be < K={K}: from w >= K no key is ever evicted")
    if not on_triton(s):
        raise RuntimeError(f"s is on {s.device}: the thresholds are built by Triton kernels "
                           "(call dma_ref.setup_device() first on a CPU)")
    ranks = rank_keys(s, block_t=block_t, table_t=table_t, chunk=chunk)
    return thresholds_unchecked(ranks, w).to(torch.int64).reshape(B, Hh, K)


def build_lifetimes(s: torch.Tensor, window: int, *, block_t: int | None = None,
                    table_t: int | None = None, chunk: int | None = None) -> torch.Tensor:
    """int64 ``[B, Hkv, K]``: ``e_j`` with ``keep(p, j) <=> j <= p < e_j`` (causal row mode).

    s ``[B, Hkv, K]`` (float, no NaN or +inf), window = w >= 1. Equals
    ``dma_ref.key_lifetimes`` exactly. ``w >= K`` gives ``e = K`` (nothing is ever evicted).
    Block sizes as in ``build_thresholds``. On a CPU without the Triton interpreter this falls
    back to ``dma_ref.key_lifetimes``.
    """
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    check_score_values(s)
    B, Hh, K = s.shape
    w = check_window(window)
    _sizes(K, block_t, table_t, chunk)                  # bad sizes fail on every device
    if w >= K or K == 0:
        return torch.full((B, Hh, K), K, dtype=torch.int64, device=s.device)
    if not on_triton(s):
        return key_lifetimes(s, w)
    ranks = rank_keys(s, block_t=block_t, table_t=table_t, chunk=chunk)
    e = lifetimes_from_thresholds(ranks.r, thresholds_unchecked(ranks, w))
    return e.to(torch.int64).reshape(B, Hh, K)


def global_lifetimes(s: torch.Tensor, window: int) -> torch.Tensor:
    """int64 ``[B, Hkv, K]``: the lifetimes of the causal global-mode mask.

    One key set ``T`` = the w best keys of all K; ``keep(p, j) <=> j <= p and j in T``, i.e.
    ``e_j = K`` for members of T and ``e_j = j`` (never admitted) for the others.
    """
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    check_score_values(s)
    return global_lifetimes_from_ranks(key_ranks(s), check_window(window))


def global_lifetimes_from_ranks(r: torch.Tensor, w: int) -> torch.Tensor:
    """``e`` of global mode from the key ranks r ``[..., K]`` (0 = best), in r's int dtype:
    K for the w best keys, j for the others (no value check: for ``build_plan``)."""
    K = r.shape[-1]
    return torch.where(r < w, K, torch.arange(K, dtype=r.dtype, device=r.device))
