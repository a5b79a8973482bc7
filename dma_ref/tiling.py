"""Tiled attention in plain PyTorch: the specification that the Triton kernels implement.

Three ideas, one per section of this module (notebook 04 derives them, notebook 06 turns them
into kernels):

1. **Online softmax over key tiles.** Visit the keys in tiles of ``BN``; keep per query row a
   running max ``m``, a running sum ``l`` of ``exp(logit - m)`` and an accumulator
   ``acc = sum_j exp(logit_j - m) v_j``. When a tile raises the max from ``m`` to ``m'``, every
   earlier term is rescaled by ``alpha = exp(m - m')``. At the end ``o = acc / l`` and
   ``lse = m + log l``: exactly softmax attention, without ever holding a full row of logits.

2. **The union of kept keys of a query block.** With the lifetimes ``e_j`` of DESIGN.md
   section 3.5 (``keep(p, j) <=> j <= p < e_j``), the keys kept by *some* position of a block
   ``[p_min, p_max]`` are ``U = {j <= p_max : e_j > max(j, p_min)}``; ``|U| <= w + BM - 1``.
   A tiled DMA forward gathers just ``U`` (in chunks of ``BN``) and applies the keep test
   per element: O(N (w + BM)) work instead of O(N^2 / 2).

3. **Tile statistics of a DMA mask** (DESIGN.md section 5, first table): the fraction of causal
   ``BM x BN`` tiles that hold at least one kept pair (what "skip empty tiles" could save), the
   kept fraction of causal pairs and the union sizes, all from ``e`` without a K x K tensor.

Conventions: ``Q <= K`` query rows, row ``i`` at position ``p_i = K - Q + i`` (bottom-right).
Query block ``b`` holds rows ``[b BM, min(Q, (b + 1) BM))``.
"""

from __future__ import annotations

import math

import torch

from .dense import query_positions
from .lifetimes import key_lifetimes
from .numerics import cdiv
from .validate import check_qkv, check_scores, check_window, default_scale

__all__ = [
    "block_positions",
    "online_softmax_attention",
    "online_softmax_finish",
    "online_softmax_init",
    "online_softmax_update",
    "tile_map",
    "tile_stats",
    "tiled_dma_forward",
    "union_index_lists",
    "union_keys",
    "union_sizes",
]


# ----------------------------------------------------------------------------------------------
# 1. Online softmax
# ----------------------------------------------------------------------------------------------

def online_softmax_init(R: int, D: int, *, dtype=torch.float32, device=None):
    """The empty state for ``R`` rows: ``m = -inf [R]``, ``l = 0 [R]``, ``acc = 0 [R, D]``."""
    m = torch.full((R,), -math.inf, dtype=dtype, device=device)
    l = torch.zeros(R, dtype=dtype, device=device)
    acc = torch.zeros(R, D, dtype=dtype, device=device)
    return m, l, acc


def online_softmax_update(m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor,
                          x: torch.Tensor, v: torch.Tensor):
    """One tile of online softmax. Returns the new ``(m, l, acc)``.

    m ``[R]`` running max, l ``[R]`` running sum of ``exp(x - m)``, acc ``[R, D]`` running
    ``sum exp(x - m) v``; x ``[R, C]`` this tile's logits (``-inf`` = masked pair), v ``[C, D]``.
    All in one float dtype (fp32 or fp64).

        m' = max(m, max_c x_c),   alpha = exp(m - m'),   P = exp(x - m')
        l' = alpha l + sum_c P_c,  acc' = alpha acc + P v

    A row that has seen only masked pairs keeps ``m = -inf``; its reference point is then taken
    as 0 so that ``exp(-inf - (-inf))`` (NaN) never happens: alpha = P = 0 for it.
    """
    m_new = torch.maximum(m, x.max(dim=-1).values)
    m_ref = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    alpha = torch.exp(m - m_ref)
    P = torch.exp(x - m_ref[:, None])
    l_new = alpha * l + P.sum(dim=-1)
    acc_new = alpha[:, None] * acc + P @ v
    return m_new, l_new, acc_new


def online_softmax_finish(m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor):
    """``(o [R, D], lse [R])`` from the final state; rows with ``l = 0`` give ``o = 0, lse = -inf``."""
    empty = l == 0
    o = acc / torch.where(empty, torch.ones_like(l), l)[:, None]
    lse = torch.where(empty, torch.full_like(m, -math.inf), m + torch.log(torch.where(empty, torch.ones_like(l), l)))
    return o, lse


def online_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                             block_n: int = 16, scale: float | None = None,
                             bias: torch.Tensor | None = None, causal: bool = False):
    """Softmax attention for one head, computed tile by tile with online softmax.

    q ``[Q, D]``, k and v ``[K, D]``, bias ``[K]`` (a per-key additive score, like DMA's s) or
    None; ``causal`` keeps ``j <= p_i = K - Q + i``. Computes in float64 for float64 inputs,
    else float32. Returns ``(o [Q, D], lse [Q])`` in that dtype; equals dense softmax attention.
    """
    if q.dim() != 2 or k.dim() != 2 or v.shape != k.shape or q.shape[1] != k.shape[1]:
        raise ValueError(f"expected q [Q, D], k and v [K, D]; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    Q, D = q.shape
    K = k.shape[0]
    if causal and Q > K:
        raise ValueError(f"causal attention needs Q <= K, got Q={Q}, K={K}")
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = default_scale(scale, D)
    q, k, v = q.to(acc_dtype), k.to(acc_dtype), v.to(acc_dtype)
    p = query_positions(Q, K, q.device)
    m, l, acc = online_softmax_init(Q, D, dtype=acc_dtype, device=q.device)
    for j0 in range(0, K, block_n):
        j = torch.arange(j0, min(K, j0 + block_n), device=q.device)
        x = scale * (q @ k[j].T)                                   # [Q, C]
        if bias is not None:
            x = x + bias[j].to(acc_dtype)[None, :]
        if causal:
            x = x.masked_fill(j[None, :] > p[:, None], -math.inf)
        m, l, acc = online_softmax_update(m, l, acc, x, v[j])
    return online_softmax_finish(m, l, acc)


# ----------------------------------------------------------------------------------------------
# 2. Unions of kept keys and the tiled DMA forward
# ----------------------------------------------------------------------------------------------

def block_positions(b: int, block_m: int, Q: int, K: int) -> tuple[int, int]:
    """``(p_min, p_max)``: the positions of the first and last row of query block ``b``."""
    i0 = b * block_m
    i1 = min(Q, i0 + block_m) - 1
    return K - Q + i0, K - Q + i1


def union_keys(e: torch.Tensor, p_min: int, p_max: int) -> torch.Tensor:
    """int64 ``[U]``: ascending keys kept by at least one position in ``[p_min, p_max]``.

    e ``[K]`` (one head's lifetimes). ``U = {j <= p_max : e_j > max(j, p_min)}``: key j is kept
    exactly on ``[j, e_j)``, and that interval meets ``[p_min, p_max]`` iff ``j <= p_max`` and
    ``e_j > max(j, p_min)``.
    """
    j = torch.arange(p_max + 1, device=e.device)
    return j[e[: p_max + 1] > torch.clamp(j, min=p_min)]


def union_sizes(e: torch.Tensor, block_m: int, q_len: int | None = None) -> torch.Tensor:
    """int64 ``[..., n_blocks]``: ``|U_b|`` for every query block, from lifetimes ``e [..., K]``.

    Each is at most ``w + block_m - 1``: the ``<= w`` keys kept at ``p_min`` plus at most one new
    key (the position's own) per later row of the block. ``union_keys`` lists one block's keys
    with one test per key (O(K) per block); the sizes alone cost O(K) for *all* blocks, by
    splitting ``U`` at ``p_min`` (no K x K tensor, no per-block pass)::

        before = #{j < p_min : e_j > p_min} = p_min - (#{j : e_j <= p_min} - [e_{p_min} = p_min])
        inside = #{p_min <= j <= p_max : e_j > j}          (a prefix count of admitted keys)

    (``e_j >= j`` always, so ``e_j <= p_min`` already implies ``j <= p_min``.)
    """
    K = e.shape[-1]
    Q = K if q_len is None else q_len
    lead = e.shape[:-1]
    flat = e.reshape(-1, K)
    j = torch.arange(K, device=e.device)
    n_blocks = cdiv(Q, block_m)
    bounds = [block_positions(b, block_m, Q, K) for b in range(n_blocks)]
    p_min = torch.tensor([lo for lo, _ in bounds], dtype=torch.int64, device=e.device)
    p_max = torch.tensor([hi for _, hi in bounds], dtype=torch.int64, device=e.device)
    hist = torch.zeros(flat.shape[0], K + 1, dtype=torch.int64, device=e.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    ended_by = torch.cumsum(hist, 1)                       # [:, p] = #{j : e_j <= p}
    admitted = torch.cumsum((flat > j).to(torch.int64), 1)  # [:, p] = #{j' <= p : e_j' > j'}
    e_pmin = flat[:, p_min]                                 # [R, n_blocks]
    before = p_min - (ended_by[:, p_min] - (e_pmin == p_min).to(torch.int64))
    inside = admitted[:, p_max] - admitted[:, p_min] + (e_pmin > p_min).to(torch.int64)
    return (before + inside).reshape(*lead, n_blocks)


def union_index_lists(e: torch.Tensor, block_m: int, q_len: int | None = None):
    """The unions of every query block as one CSR structure, the input of the gather kernel.

    e ``[K]`` (one head). Returns ``(offsets int64 [n_blocks + 1], indices int64 [total])``:
    block b's keys are ``indices[offsets[b]:offsets[b + 1]]``, ascending.
    """
    K = e.shape[-1]
    Q = K if q_len is None else q_len
    n_blocks = cdiv(Q, block_m)
    lists = [union_keys(e, *block_positions(b, block_m, Q, K)) for b in range(n_blocks)]
    sizes = torch.tensor([len(u) for u in lists], dtype=torch.int64)
    offsets = torch.zeros(n_blocks + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(sizes, 0)
    indices = torch.cat(lists) if lists else torch.zeros(0, dtype=torch.int64)
    return offsets.to(e.device), indices.to(e.device)


def tiled_dma_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                      window: int, *, block_m: int = 16, block_n: int = 16,
                      scale: float | None = None):
    """Causal row-mode DMA, computed the way the Triton forward does it.

    q ``[B, Hq, Q, D]``; k, v ``[B, Hkv, K, D]``; s ``[B, Hkv, K]``; Q <= K. For every batch,
    KV head and query block: take the union ``U`` of kept keys from the lifetimes, visit it in
    chunks of ``block_n`` gathered keys, test ``j <= p < e_j`` per element, and run online
    softmax. The ``G`` query heads of a KV group are packed into one ``[G * block_m, D]`` row
    block so they share every gathered K/V chunk (GQA packing). Computes in float64 for float64
    inputs, else float32. Returns ``(o [B, Hq, Q, D]`` in q's dtype, ``lse [B, Hq, Q]``
    float32); rows with no kept key give ``o = 0`` and ``lse = -inf``.
    """
    B, Hq, Hkv, Q, K, D = check_qkv(q, k, v, q_le_k=True)
    check_scores(s, B, Hkv, K, q.device)
    w = check_window(window)
    scale = default_scale(scale, D)
    G = Hq // Hkv
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    e = key_lifetimes(s, w)                                                  # [B, Hkv, K]
    qg = q.to(acc_dtype).reshape(B, Hkv, G, Q, D)
    o = torch.zeros(B, Hkv, G, Q, D, dtype=acc_dtype, device=q.device)
    lse = torch.full((B, Hkv, G, Q), -math.inf, dtype=acc_dtype, device=q.device)
    for b in range(B):
        for h in range(Hkv):
            for blk in range(cdiv(Q, block_m)):
                i = torch.arange(blk * block_m, min(Q, (blk + 1) * block_m), device=q.device)
                p = (K - Q + i).repeat(G)                                    # [G * BM] positions
                q_blk = qg[b, h][:, i].reshape(-1, D)                        # [G * BM, D]
                U = union_keys(e[b, h], int(K - Q + i[0]), int(K - Q + i[-1]))
                m, l, acc = online_softmax_init(len(p), D, dtype=acc_dtype, device=q.device)
                for c0 in range(0, len(U), block_n):
                    j = U[c0:c0 + block_n]                                   # gathered key ids
                    x = scale * (q_blk @ k[b, h, j].to(acc_dtype).T) + s[b, h, j].to(acc_dtype)
                    keep = (j[None, :] <= p[:, None]) & (p[:, None] < e[b, h, j][None, :])
                    x = x.masked_fill(~keep, -math.inf)
                    m, l, acc = online_softmax_update(m, l, acc, x, v[b, h, j].to(acc_dtype))
                o_blk, lse_blk = online_softmax_finish(m, l, acc)
                o[b, h][:, i] = o_blk.reshape(G, len(i), D)
                lse[b, h][:, i] = lse_blk.reshape(G, len(i))
    return o.reshape(B, Hq, Q, D).to(q.dtype), lse.reshape(B, Hq, Q).to(torch.float32)


# ----------------------------------------------------------------------------------------------
# 3. Tile statistics
# ----------------------------------------------------------------------------------------------

TILE_FUTURE, TILE_EMPTY, TILE_KEPT = 0, 1, 2


def tile_map(e: torch.Tensor, block_m: int, block_n: int, q_len: int | None = None) -> torch.Tensor:
    """int8 ``[n_qblocks, n_kblocks]`` for one head's lifetimes ``e [K]``.

    ``TILE_FUTURE`` (0): the tile holds no causal pair (every key after every row);
    ``TILE_EMPTY`` (1): causal, but no pair is kept; ``TILE_KEPT`` (2): >= 1 kept pair.

    Built from the intervals ``[j, e_j)`` without a K x K tensor: key j's interval covers the
    contiguous range of query blocks from the row of ``max(j, K - Q)`` to the row of
    ``e_j - 1``; a difference array over query blocks marks them in O(K + tiles).
    """
    if e.dim() != 1:
        raise ValueError(f"e must be one head's lifetimes [K]; got shape {tuple(e.shape)}")
    K = e.shape[0]
    Q = K if q_len is None else q_len
    nqb, nkb = cdiv(Q, block_m), cdiv(K, block_n)
    j = torch.arange(K, device=e.device)
    first = torch.clamp(j, min=K - Q)                   # first position that can keep j
    live = e > first                                    # kept by at least one query row
    r0 = (first[live] - (K - Q)) // block_m             # query block of the first keeping row
    r1 = (e[live] - 1 - (K - Q)) // block_m             # ... and of the last one
    c = j[live] // block_n
    diff = torch.zeros(nqb + 1, nkb, dtype=torch.int64, device=e.device)
    diff.index_put_((r0, c), torch.ones_like(r0), accumulate=True)
    diff.index_put_((r1 + 1, c), -torch.ones_like(r1), accumulate=True)
    kept = torch.cumsum(diff, 0)[:nqb] > 0
    p_max = torch.tensor([block_positions(b, block_m, Q, K)[1] for b in range(nqb)], device=e.device)
    causal = (torch.arange(nkb, device=e.device) * block_n)[None, :] <= p_max[:, None]
    out = torch.full((nqb, nkb), TILE_FUTURE, dtype=torch.int8, device=e.device)
    out[causal] = TILE_EMPTY
    out[kept] = TILE_KEPT
    return out


def tile_stats(e: torch.Tensor, block_m: int, block_n: int, q_len: int | None = None) -> dict:
    """The quantities of DESIGN.md section 5's first table, for lifetimes ``e [..., K]``.

    Returns floats: ``kept_fraction`` (kept pairs / causal pairs), ``tile_fraction`` (causal
    ``block_m x block_n`` tiles with >= 1 kept pair / causal tiles), ``union_mean`` and
    ``union_max`` (keys in the union of a query block), ``work_ratio`` (pairs a union kernel
    visits, ``sum_b rows_b |U_b|``, over causal pairs), pooled over all leading dims.
    """
    K = e.shape[-1]
    Q = K if q_len is None else q_len
    heads = e.reshape(-1, K)
    j = torch.arange(K, device=e.device)
    kept_pairs = (e - torch.clamp(j, min=K - Q)).clamp(min=0).sum().item()
    causal_pairs = heads.shape[0] * sum(K - Q + i + 1 for i in range(Q))
    kept_tiles = causal_tiles = 0
    for eh in heads:
        tm = tile_map(eh, block_m, block_n, Q)
        kept_tiles += int((tm == TILE_KEPT).sum())
        causal_tiles += int((tm != TILE_FUTURE).sum())
    U = union_sizes(heads, block_m, Q)                                      # [H, n_blocks]
    rows = torch.tensor([min(Q, (b + 1) * block_m) - b * block_m for b in range(U.shape[-1])])
    return {
        "kept_fraction": kept_pairs / causal_pairs,
        "tile_fraction": kept_tiles / causal_tiles,
        "union_mean": U.double().mean().item(),
        "union_max": int(U.max()),
        "work_ratio": float((U.cpu() * rows).sum()) / causal_pairs,
    }
