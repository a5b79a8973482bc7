"""Checkers for notebook 06 (Triton forward): the per-element keep test of a gathered tile
(bottom-right causal alignment plus lifetimes), the per-block index lists (the unions), and the
learner's ``@triton.jit`` DMA forward over those lists (launched through ``triton_run``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import tiling as tiling_mod
from ..lifetimes import key_lifetimes
from ..mask import dma_mask
from ..naive import naive_dma_attention
from ..numerics import cdiv
from ..tiling import block_positions, union_keys
from .core import Result, exercise, expect_tensor, forbid, generator, resolve_seed, run_checks
from .triton_run import expect_close, guarded, launch, output


@exercise(points=2)
def check_keep_test(fn: Callable[..., torch.Tensor], strict: bool = False, *,
                    seed: int | None = None) -> Result:
    """``fn(i, j, e_j, Q, K) -> bool [BM, BN]``: does query row ``i`` keep gathered key ``j``?

    i int64 ``[BM]`` query rows (row i sits at position ``K - Q + i``), j int64 ``[BN]`` key ids,
    e_j int64 ``[BN]`` their lifetimes. Checked on every (row block, key chunk) of random DMA
    masks with Q < K and Q = K against ``dma_mask``.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for Q, K, w, BM, BN in [(12, 12, 3, 4, 4), (7, 25, 5, 4, 8), (1, 9, 2, 1, 3),
                                (30, 30, 40, 16, 16), (10, 40, 6, 8, 5)]:
            s = torch.randn(1, 1, K, generator=g)
            e = key_lifetimes(s, w)[0, 0]
            mask = dma_mask(s, w, q_len=Q)[0, 0]
            for i0 in range(0, Q, BM):
                i = torch.arange(i0, min(Q, i0 + BM))
                perm = torch.randperm(K, generator=g)          # gathered keys come in any order
                for c0 in range(0, K, BN):
                    j = perm[c0:c0 + BN]
                    got = fn(i.clone(), j.clone(), e[j].clone(), Q, K)
                    want = mask[i][:, j]
                    expect_tensor(got, dtype=torch.bool, shape=tuple(want.shape))
                    bad = (got != want).nonzero()
                    if bad.numel():
                        a, c = bad[0].tolist()
                        raise AssertionError(
                            f"Q={Q}, K={K}, w={w} (seed {seed}): row i={int(i[a])} (position "
                            f"{K - Q + int(i[a])}), key j={int(j[c])} with e_j={int(e[j[c]])}: "
                            f"expected {bool(want[a, c])}")
    return run_checks("keep test of a gathered tile", trials, strict=strict, seed=seed)


@exercise(points=3)
def check_union_lists(fn: Callable[..., tuple], strict: bool = False, *,
                      seed: int | None = None) -> Result:
    """``fn(e, block_m, Q) -> (offsets, indices)``: the unions of all query blocks in CSR form.

    e int64 ``[K]``; query block b holds rows ``b*block_m .. min(Q, (b+1)*block_m) - 1`` at
    positions ``K - Q + i``. offsets int64 ``[n_blocks + 1]`` with ``offsets[0] = 0``; block b's
    keys, ascending, are ``indices[offsets[b]:offsets[b+1]]``.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for Q, K, w, BM in [(16, 16, 3, 4), (9, 30, 5, 4), (40, 40, 50, 16), (1, 12, 4, 8),
                            (37, 37, 6, 16)]:
            e = key_lifetimes(torch.randn(1, 1, K, generator=g), w)[0, 0]
            with forbid("build the lists yourself: the exercise is to build union_lists, not to "
                        "call tiling.union_index_lists", (tiling_mod, "union_index_lists")):
                got = fn(e.clone(), BM, Q)
            assert isinstance(got, tuple) and len(got) == 2, "return the tuple (offsets, indices)"
            offsets, indices = (torch.as_tensor(t) for t in got)
            n_blocks = cdiv(Q, BM)
            assert offsets.shape == (n_blocks + 1,), (
                f"Q={Q}, block_m={BM}: offsets must have n_blocks + 1 = {n_blocks + 1} entries, "
                f"got {tuple(offsets.shape)}")
            assert int(offsets[0]) == 0, "offsets[0] must be 0"
            for b in range(n_blocks):
                want = union_keys(e, *block_positions(b, BM, Q, K))
                got_b = indices[int(offsets[b]):int(offsets[b + 1])].to(torch.int64)
                assert torch.equal(got_b, want), (
                    f"Q={Q}, K={K}, w={w}, block {b} (seed {seed}): got keys {got_b.tolist()}, "
                    f"expected {want.tolist()}")
    return run_checks("union index lists", trials, strict=strict, seed=seed)


# ------------------------------------------------------------------ the Triton exercise

# (B, Hq, Hkv, Q, K, w, BM, BN): an empty row (Q = K, key 0 scored -inf), GQA with Q < K and
# two batches, a window wider than the sequence, MQA with blocks of different sizes.
FORWARD_CASES = [(1, 2, 1, 21, 21, 4, 16, 16), (2, 4, 2, 19, 45, 6, 16, 16),
                 (1, 2, 2, 17, 17, 40, 16, 32), (1, 3, 1, 9, 40, 8, 32, 16)]
FORWARD_D = 16


def shuffled_unions(e: torch.Tensor, BM: int, Q: int,
                    g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The CSR unions of every KV head (``e`` int64 ``[B, Hkv, K]``), each block's keys in a
    random order (a kernel must not rely on ascending lists): ``(offsets int64 [B*Hkv,
    n_blocks + 1]`` into one ``indices`` int64 ``[total]``), head r's block b at
    ``indices[offsets[r, b]:offsets[r, b + 1]]``."""
    K = e.shape[-1]
    offsets, indices, base = [], [], 0
    for e_head in e.reshape(-1, K):
        off, idx = tiling_mod.union_index_lists(e_head, BM, Q)
        for b in range(len(off) - 1):
            part = idx[off[b]:off[b + 1]]
            idx[off[b]:off[b + 1]] = part[torch.randperm(len(part), generator=g)]
        offsets.append(off + base)
        indices.append(idx)
        base += len(idx)
    return torch.stack(offsets), torch.cat(indices)


def forward_case(g: torch.Generator, B: int, Hq: int, Hkv: int, Q: int, K: int, w: int,
                 D: int = FORWARD_D) -> tuple[torch.Tensor, ...]:
    """q, k, v, s (fp32 values, float64 dtype) and e (int64) of one case; with ``Q = K`` key 0
    of every KV head is scored ``-inf``, so row 0 keeps only a ``-inf`` logit (an empty row)."""
    q = torch.randn(B, Hq, Q, D, generator=g).double()
    k = torch.randn(B, Hkv, K, D, generator=g).double()
    v = torch.randn(B, Hkv, K, D, generator=g).double()
    s = torch.randn(B, Hkv, K, generator=g).double()
    if Q == K:
        s[:, :, 0] = -math.inf
    return q, k, v, s, key_lifetimes(s, w)


@exercise(points=4)
def check_dma_forward_kernel(kernel, strict: bool = False, *, seed: int | None = None) -> Result:
    """``kernel(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, Hq,
    Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr)``, grid
    ``(n_blocks, B * Hq)``: causal row-mode DMA over the gathered unions.

    q, o fp32 ``[B, Hq, Q, D]``; k, v fp32 ``[B, Hkv, K, D]``; s fp32 ``[B, Hkv, K]``; e int64
    ``[B, Hkv, K]``; off int64 ``[B * Hkv, n_blocks + 1]``, idx int64 (the unions of each KV
    head, keys of a block in any order); lse fp32 ``[B, Hq, Q]``; all contiguous, D = 16.
    Launched under the interpreter with no torch function and no package kernel allowed, on
    buffers padded with NaN (inputs) and a sentinel (outputs), against float64
    ``naive_dma_attention``.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for B, Hq, Hkv, Q, K, w, BM, BN in FORWARD_CASES:
            q, k, v, s, e = forward_case(g, B, Hq, Hkv, Q, K, w)
            offsets, indices = shuffled_unions(e, BM, Q, g)
            n_blocks = cdiv(Q, BM)
            o, lse = output((B * Hq * Q * FORWARD_D,)), output((B * Hq * Q,))
            ins = [guarded(t.float().reshape(-1)).view for t in (q, k, v, s)]
            launch(kernel, (n_blocks, B * Hq), *ins, guarded(e.reshape(-1), fill=K).view,
                   guarded(offsets.reshape(-1), fill=0).view, guarded(indices, fill=K).view,
                   o.view, lse.view, Q, K, Hq, Hkv, n_blocks, FORWARD_D**-0.5, D=FORWARD_D,
                   BM=BM, BN=BN)
            where = (f"B={B}, Hq={Hq}, Hkv={Hkv}, Q={Q}, K={K}, w={w}, BM={BM}, BN={BN} "
                     f"(seed {seed})")
            o.check_written()
            for out in (o, lse):
                out.check_untouched(where)
            o_want, lse_want = naive_dma_attention(q, k, v, s, w, return_lse=True)
            expect_close(lse.view.view(B, Hq, Q), lse_want, f"lse [B, Hq, Q], {where}")
            expect_close(o.view.view(B, Hq, Q, FORWARD_D), o_want, f"o [B, Hq, Q, D], {where}")
    return run_checks("the DMA forward kernel over the gathered unions", trials, strict=strict,
                      seed=seed)
