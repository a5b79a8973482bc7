"""Key lifetimes ``e_j`` of the causal row-mode mask: a sort, then three small Triton kernels.

DESIGN.md section 3.5: with ``r_j`` the rank of key j (0 = best, by ``(s_j, j)`` descending),

    keep(p, j)  <=>  j <= p < e_j,      e_j = max(j, first p with theta_p < r_j)   (K if none),

``theta_p`` being the w-th smallest rank among ``{j' <= p}``. Ranks are distinct, so
``theta_p < r_j`` says "at least w keys at positions <= p rank better than j". Hence

    e_j = max(j, position of the w-th better-ranked key, in position order)   (K if r_j < w).

``dma_ref.key_lifetimes`` runs a heap along the positions, one key at a time. Here every key
finds its w-th better key in parallel, in two steps, without any K x K tensor:

1. Cut the positions into superblocks of ``S``. For key j, ``cnt[c]`` = its better keys in
   superblock c. Keys are handled in rank order, ``BJ`` consecutive ranks per program:
   ``cnt[c]`` = ``H[c, rb]`` (keys of the earlier rank blocks in superblock c: a small table,
   one histogram of rank blocks per superblock, ``rank_table_kernel``) + the earlier ranks of
   the program's own block in superblock c (a cumsum over a ``[BJ, nS]`` one-hot). The first
   superblock ``c*`` where the running sum over c reaches w holds the w-th better key: it is
   the ``m``-th better key of ``c*``, ``m`` = w - (better keys before ``c*``).
2. Scan the S positions of ``c*``, ``BP`` at a time, counting the better keys (a cumsum) until
   the m-th.

The ranks themselves come from one sort of s and ``ranks_kernel`` (the inverse permutation).
Work O(K (nS + S)): with the default S = K / 128 (nS <= 128) about K^2 / 128 compares for long
K (1.5e8 at K = 128K), spread over K / BJ programs. Memory O(K) plus the ``[nS, K / BJ]``
table. Equal to ``dma_ref.key_lifetimes`` exactly, ties included.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from dma_ref.lifetimes import key_lifetimes
from dma_ref.mask import key_ranks
from dma_ref.validate import check_score_values, check_tensor, check_window

from .hostmath import cdiv, next_pow2

__all__ = ["build_lifetimes", "global_lifetimes", "superblock_size"]


@triton.jit
def ranks_kernel(ORDER_ASC, ORDER, R, n_k, BLOCK: tl.constexpr):
    """One program: ``BLOCK`` consecutive ranks of head bh (the inverse permutation, in one pass).

    ORDER_ASC int64 ``[BH, K]``: ``sort(s, stable=True).indices``, ascending, equal scores in
    position order; read backwards it ranks by (s_j, j) descending, so that among equal scores
    the later key comes first (the tie rule; NaN, sorted last, ranks first). Writes ORDER int32
    ``[BH, K]`` = the keys by rank (``dma_ref.mask.key_order``) and R int32 ``[BH, K]`` = the
    rank of each key (``key_ranks``): ``R[ORDER[r]] = r``.
    """
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    bh = tl.program_id(1).to(tl.int64)
    ok = r < n_k
    j = tl.load(ORDER_ASC + bh * n_k + (n_k - 1 - r), mask=ok, other=0).to(tl.int32)
    tl.store(ORDER + bh * n_k + r, j, mask=ok)
    tl.store(R + bh * n_k + j, r, mask=ok)


@triton.jit
def rank_table_kernel(R, H, n_k, n_rb, S: tl.constexpr, NRB: tl.constexpr, BJ: tl.constexpr,
                      BP: tl.constexpr):
    """One program: row ``H[bh, c, :]`` = the keys of superblock c of ranks < rb BJ, for every
    rank block rb (a histogram of the superblock's rank blocks, then an exclusive cumsum).

    R int32 ``[BH, K]`` ranks; H int32 ``[BH, n_s, n_rb]`` out.
    """
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    hist = tl.zeros([NRB], tl.int32)
    for t0 in range(0, S, BP):
        pos = c * S + t0 + tl.arange(0, BP)
        r = tl.load(R + bh * n_k + pos, mask=pos < n_k, other=0)
        hist += tl.histogram(r // BJ, NRB, mask=pos < n_k)
    rb = tl.arange(0, NRB)
    tl.store(H + (bh * tl.num_programs(0) + c) * n_rb + rb, tl.cumsum(hist, 0) - hist,
             mask=rb < n_rb)


@triton.jit
def lifetimes_kernel(R, ORDER, H, E, n_k, w, n_rb, n_s,
                     S: tl.constexpr, NS: tl.constexpr, BJ: tl.constexpr, BP: tl.constexpr):
    """One program: the keys of ranks ``[rb BJ, (rb + 1) BJ)`` of head ``bh``.

    R int32 ``[BH, K]`` ranks; ORDER int32 ``[BH, K]`` keys by rank; H int32 ``[BH, n_s, n_rb]``
    better keys per superblock before each rank block; E int32 ``[BH, K]`` out.
    """
    rb = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    rank = rb * BJ + tl.arange(0, BJ)                                    # [BJ]
    valid = rank < n_k
    j = tl.load(ORDER + bh * n_k + rank, mask=valid, other=0)
    c = tl.arange(0, NS)

    # 1. Better keys per superblock, then the superblock c* where their running sum reaches w.
    h_row = tl.load(H + (bh * n_s + c) * n_rb + rb, mask=c < n_s, other=0)   # [NS]
    onehot = ((j // S)[:, None] == c[None, :]) & valid[:, None]
    onehot = onehot.to(tl.int32)
    cnt = h_row[None, :] + tl.cumsum(onehot, 0) - onehot                 # [BJ, NS]
    below = tl.cumsum(cnt, 1) < w                                        # non-increasing in c
    c_star = tl.sum(below.to(tl.int32), 1)                               # NS: never reaches w
    crossed = valid & (c_star < NS)
    m = w - tl.sum(tl.where(below, cnt, 0), 1)                           # 1 <= m <= cnt[c*]

    # 2. The m-th better key inside superblock c*.
    found = tl.full([BJ], 2147483647, tl.int32)
    seen = tl.zeros([BJ], tl.int32)
    for t0 in range(0, S, BP):
        pos = c_star[:, None] * S + t0 + tl.arange(0, BP)[None, :]       # [BJ, BP]
        ok = crossed[:, None] & (pos < n_k)
        r = tl.load(R + bh * n_k + pos, mask=ok, other=n_k)              # n_k: never better
        better = (r < rank[:, None]).to(tl.int32)
        nth = tl.cumsum(better, 1) + seen[:, None]
        hit = (better == 1) & (nth == m[:, None])
        found = tl.minimum(found, tl.min(tl.where(hit, pos, 2147483647), 1))
        seen += tl.sum(better, 1)
    e = tl.where(crossed, tl.maximum(j, found), n_k)
    tl.store(E + bh * n_k + j, e, mask=valid)


def superblock_size(K: int, bp: int = 128) -> int:
    """The default S: the smallest power of two >= ``bp`` that cuts K into at most 128 superblocks."""
    return max(bp, next_pow2(-(-K // 128)))


def _on_triton(x: torch.Tensor) -> bool:
    return x.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def build_lifetimes(s: torch.Tensor, window: int, *, superblock: int | None = None,
                    block_j: int = 128, block_p: int = 128) -> torch.Tensor:
    """int64 ``[B, Hkv, K]``: ``e_j`` with ``keep(p, j) <=> j <= p < e_j`` (causal row mode).

    s ``[B, Hkv, K]`` (float, no NaN or +inf), window = w >= 1. Equals
    ``dma_ref.key_lifetimes`` exactly. ``w >= K`` gives ``e = K`` (nothing is ever evicted).
    ``superblock`` (S), ``block_j`` (BJ), ``block_p`` (BP): powers of two that change the speed,
    never the result; S must be a multiple of BP. On a CPU without the Triton interpreter this
    falls back to ``dma_ref.key_lifetimes``.
    """
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    check_score_values(s)
    B, Hh, K = s.shape
    e = lifetimes_unchecked(s, check_window(window), superblock, block_j, block_p)
    return e.to(torch.int64).reshape(B, Hh, K)


def lifetimes_unchecked(s: torch.Tensor, w: int, superblock: int | None = None,
                        block_j: int = 128, block_p: int = 128) -> torch.Tensor:
    """int32 ``[B * Hkv, K]``: ``build_lifetimes`` without validating s (for ``build_plan``:
    ``dma_attention`` has validated it already, and the value check costs a host sync)."""
    B, Hh, K = s.shape
    if w >= K or K == 0:
        return torch.full((B * Hh, K), K, dtype=torch.int32, device=s.device)
    if not _on_triton(s):
        return key_lifetimes(s, w).reshape(B * Hh, K).to(torch.int32)
    S = superblock or superblock_size(K, block_p)
    if S % block_p or S & (S - 1) or block_j & (block_j - 1):
        raise ValueError(f"superblock={S} must be a power of two and a multiple of block_p="
                         f"{block_p}; block_j={block_j} a power of two")
    BH, dev = B * Hh, s.device
    # key_order and key_ranks of dma_ref.mask in two launches (an ascending stable sort, read
    # backwards by ranks_kernel) rather than eight small torch ops: at N = 16K the builder is
    # bound by launches, not by the GPU.
    order_asc = torch.sort(s.reshape(BH, K), dim=-1, stable=True).indices
    order = torch.empty(BH, K, dtype=torch.int32, device=dev)
    r32 = torch.empty(BH, K, dtype=torch.int32, device=dev)
    ranks_kernel[(cdiv(K, 1024), BH)](order_asc, order, r32, K, BLOCK=1024, num_warps=4)
    n_s = -(-K // S)
    NS = next_pow2(n_s)
    n_rb = -(-K // block_j)
    H = torch.empty(BH, n_s, n_rb, dtype=torch.int32, device=dev)
    rank_table_kernel[(n_s, BH)](r32, H, K, n_rb, S=S, NRB=next_pow2(n_rb),
                                 BJ=block_j, BP=block_p, num_warps=4)
    e = torch.empty(BH, K, dtype=torch.int32, device=dev)
    lifetimes_kernel[(n_rb, BH)](r32, order, H, e, K, w, n_rb, n_s,
                                 S=S, NS=NS, BJ=block_j, BP=block_p, num_warps=4)
    return e


def global_lifetimes(s: torch.Tensor, window: int) -> torch.Tensor:
    """int64 ``[B, Hkv, K]``: the lifetimes of the causal global-mode mask.

    One key set ``T`` = the w best keys of all K; ``keep(p, j) <=> j <= p and j in T``, i.e.
    ``e_j = K`` for members of T and ``e_j = j`` (never admitted) for the others.
    """
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    check_score_values(s)
    return global_lifetimes_unchecked(s, check_window(window))


def global_lifetimes_unchecked(s: torch.Tensor, w: int) -> torch.Tensor:
    """``global_lifetimes`` without validating s (no host sync, for ``build_plan``)."""
    K = s.shape[-1]
    j = torch.arange(K, device=s.device).expand_as(s)
    return torch.where(key_ranks(s) < w, torch.full_like(j, K), j).contiguous()
