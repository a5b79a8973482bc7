"""The deterministic backward's reduction: each key's partial rows summed in a fixed order.

With ``deterministic=True`` the backward kernel stores one partial row of dK, dV, ds per visited
(program, slot) instead of adding atomically (backward.py); ``slot_keys`` says which key each
partial row belongs to, ``reduce_partials`` sums them per key in row order (the same bits on
every run). Every size is known on the host (no boolean selection, no ``bincount``): the path
never waits for the GPU and can be captured in a CUDA graph like the atomic one.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import padded_head_dim
from .plan import KeyPlan


@triton.jit
def reduce_partials_kernel(PK, PV, PS, ROWS, OFF, CNT, DK, DV, DS, HEAD_D: tl.constexpr,
                           HEAD_DP: tl.constexpr):
    """One program per key (``B*Hkv*K`` programs): sum its partial rows, in the order of ROWS.

    ROWS int64: the partial rows sorted by key (each key's rows ascending); OFF, CNT int64
    ``[B*Hkv*K]``: where each key's rows start and how many; DK, DV fp32 ``[B*Hkv*K, D]`` and DS
    fp32 ``[B*Hkv*K]`` out (D = HEAD_D, padded to HEAD_DP lanes). A fixed order of additions: the
    same bits on every run.
    """
    key = tl.program_id(0).to(tl.int64)
    d = tl.arange(0, HEAD_DP)
    dm = d < HEAD_D
    off = tl.load(OFF + key)
    n = tl.load(CNT + key)
    dk = tl.zeros([HEAD_DP], tl.float32)
    dv = tl.zeros([HEAD_DP], tl.float32)
    ds = 0.0
    for t in range(n):
        row = tl.load(ROWS + off + t)
        dk += tl.load(PK + row * HEAD_D + d, mask=dm, other=0.0)
        dv += tl.load(PV + row * HEAD_D + d, mask=dm, other=0.0)
        ds += tl.load(PS + row)
    tl.store(DK + key * HEAD_D + d, dk, mask=dm)
    tl.store(DV + key * HEAD_D + d, dv, mask=dm)
    tl.store(DS + key, ds)


def slot_keys(plan: KeyPlan, BH: int, Q: int, K: int) -> tuple[int, torch.Tensor]:
    """``(LIST_W, key_map int64 [BH, nQB, LIST_W + BLOCK_Q])``: the key whose contribution each
    partial row of a block holds (-1: the row is never written), as backward.py lays them out."""
    BQ, n_qb, dev = plan.block_q, plan.n_qb, plan.count.device
    if plan.causal:
        W = plan.idx.numel() // (BH * n_qb)                   # the fixed slot of block_key_lists
        slots = plan.idx.view(BH, n_qb, W).long()
    else:                                                     # one shared top-w list per head
        W = plan.idx.numel() // BH
        slots = plan.idx.view(BH, 1, W).long().expand(BH, n_qb, W)
    listed = torch.arange(W, device=dev)[None, None, :] < plan.count[:, :, None]
    slots = torch.where(listed, slots, -1)
    p0 = (K - Q) + torch.arange(n_qb, device=dev) * BQ                       # [nQB]
    diag = p0[:, None] + torch.arange(BQ, device=dev)[None, :]              # [nQB, BQ]
    p1 = (K - Q) + torch.clamp((torch.arange(n_qb, device=dev) + 1) * BQ, max=Q) - 1
    diag = torch.where(diag <= p1[:, None], diag, -1) if plan.causal else torch.full_like(diag, -1)
    return W, torch.cat([slots, diag.expand(BH, n_qb, BQ)], dim=2)


def reduce_partials(pk, pv, ps, key_map, n_hg: int, K: int, dk, dv, ds) -> None:
    """dk, dv, ds (fp32, written in place) = the sum of each key's partial rows, in row order.

    pk, pv fp32 ``[rows, D]``, ps fp32 ``[rows]``: the partial buffers; key_map int64
    ``[BH, nQB, R]`` (``slot_keys``); n_hg head groups per KV head; dk, dv fp32 ``[B, Hkv, K, D]``,
    ds fp32 ``[B, Hkv, K]``."""
    BH, n_qb, R = key_map.shape
    n_keys, dev = BH * K, key_map.device
    km = key_map[:, None].expand(BH, n_hg, n_qb, R).reshape(BH, -1)           # partial row order
    # Rows never written (-1) get the key n_keys: they sort after every real key and no program
    # reads them. Fixed sizes throughout, so nothing waits for the GPU.
    key = torch.where(km >= 0, km + torch.arange(BH, device=dev)[:, None] * K, n_keys).flatten()
    key_sorted, rows = torch.sort(key, stable=True)          # stable: each key's rows ascending
    bounds = torch.searchsorted(key_sorted, torch.arange(n_keys + 1, device=dev))
    off, cnt = bounds[:-1], bounds[1:] - bounds[:-1]
    D = dk.shape[-1]
    reduce_partials_kernel[(n_keys,)](pk, pv, ps, rows, off, cnt, dk.view(n_keys, D),
                                      dv.view(n_keys, D), ds.view(n_keys),
                                      HEAD_D=D, HEAD_DP=padded_head_dim(D), num_warps=1)
