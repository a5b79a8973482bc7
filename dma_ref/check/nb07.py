"""Checkers for notebook 07 (Triton backward): the softmax backward of one gathered tile,
``dS = P * (dP - Delta)``, the accumulation of the score gradient ``ds`` from such tiles, and the
learner's ``@triton.jit`` key-major pass that writes dK, dV and ds (launched through
``triton_run``, against float64 autograd)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..lifetimes import key_lifetimes
from ..naive import naive_dma_attention
from ..numerics import cdiv
from .core import Result, context, exercise, expect_tensor, generator, resolve_seed, run_checks
from .triton_run import expect_close, guarded, launch, output


@exercise(points=2)
def check_dS(fn: Callable[..., torch.Tensor], strict: bool = False, *,
             seed: int | None = None) -> Result:
    """``fn(P, dP, o, dO) -> dS``: the logit gradient of one key chunk of a tiled backward.

    P ``[R, C]`` softmax probabilities of R query rows for C of their keys (a *chunk* of each
    row, not the whole row), dP ``[R, C]`` = ``dO V_chunk^T``, o and dO ``[R, D]`` the rows'
    outputs and output gradients. Returns dS ``[R, C]``; compared with autograd of a full
    softmax-attention row.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for R, K, D, chunk in [(3, 10, 4, slice(2, 6)), (5, 16, 8, slice(0, 16)),
                               (4, 12, 2, slice(9, 12)), (1, 7, 3, slice(3, 4))]:
            x = torch.randn(R, K, generator=g, dtype=torch.float64, requires_grad=True)
            v = torch.randn(K, D, generator=g, dtype=torch.float64)
            P = torch.softmax(x, -1)
            o = P @ v
            dO = torch.randn(R, D, generator=g, dtype=torch.float64)
            (dx,) = torch.autograd.grad(o, x, dO)
            dP = dO @ v.T
            got = fn(P.detach()[:, chunk].clone(), dP[:, chunk].clone(), o.detach().clone(),
                     dO.clone())
            expect_tensor(got)
            where = f"R={R}, K={K}, chunk {chunk.start}:{chunk.stop} of each row (seed {seed})"
            torch.testing.assert_close(got, dx[:, chunk], msg=context(where))
    return run_checks("dS of a gathered tile", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_ds_accumulate(fn: Callable[..., torch.Tensor], strict: bool = False, *,
                        seed: int | None = None) -> Result:
    """``fn(ds, dS, idx) -> ds``: add one tile's contribution to the score gradient.

    ds float ``[K]`` (one KV head's running gradient), dS ``[G, BM, C]`` the logit gradients of
    the G query heads of the group for BM rows and the C gathered keys ``idx`` int64 ``[C]``.
    Called once per (query block, key chunk) on overlapping unions; returns the updated ds
    (in place or new). The result must equal autograd's ``ds`` over all tiles.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for K, G, BM, C, n_tiles in [(12, 1, 4, 3, 5), (20, 4, 2, 6, 8), (9, 2, 3, 9, 3),
                                     (30, 3, 5, 4, 10)]:
            ds = torch.zeros(K, dtype=torch.float64)
            s = torch.zeros(K, dtype=torch.float64, requires_grad=True)
            total = torch.zeros((), dtype=torch.float64)
            for _ in range(n_tiles):
                idx = torch.randperm(K, generator=g)[:C]
                dS = torch.randn(G, BM, C, generator=g, dtype=torch.float64)
                # the bias enters every logit of column idx_c for every head and row of the tile
                total = total + (dS * s[idx][None, None, :]).sum()
                out = fn(ds, dS.clone(), idx.clone())
                ds = ds if out is None else out
            (want,) = torch.autograd.grad(total, s)
            expect_tensor(ds)
            where = f"K={K}, G={G}, BM={BM}, C={C}, {n_tiles} tiles (seed {seed})"
            torch.testing.assert_close(ds, want, msg=context(where))
    return run_checks("ds accumulated from tiles", trials, strict=strict, seed=seed)


# ------------------------------------------------------------------ the Triton exercise

# (B, Hq, Hkv, Q, K, w, BM, BN): an empty row (Q = K, key 0 scored -inf), GQA with Q < K and
# two batches, a window wider than the sequence, MQA with blocks of different sizes.
KEY_MAJOR_CASES = [(1, 2, 1, 21, 21, 4, 16, 16), (2, 4, 2, 19, 45, 6, 16, 16),
                   (1, 2, 2, 17, 17, 40, 16, 32), (1, 3, 1, 9, 40, 8, 32, 16)]
KEY_MAJOR_D = 16


def backward_case(g: torch.Generator, B: int, Hq: int, Hkv: int, Q: int, K: int, w: int,
                  D: int = KEY_MAJOR_D) -> dict[str, torch.Tensor]:
    """One case in float64 (fp32 values): q, k, v, s, dO, the lifetimes e (int64), the forward's
    lse and ``Delta = rowsum(dO * O)`` ``[B, Hq, Q]``, and the float64 autograd gradients
    dk, dv ``[B, Hkv, K, D]``, ds ``[B, Hkv, K]`` of ``naive_dma_attention``. With ``Q = K``
    key 0 of every KV head is scored ``-inf``: row 0 keeps nothing finite (an empty row)."""
    q = torch.randn(B, Hq, Q, D, generator=g).double()
    k = torch.randn(B, Hkv, K, D, generator=g).double().requires_grad_()
    v = torch.randn(B, Hkv, K, D, generator=g).double().requires_grad_()
    s = torch.randn(B, Hkv, K, generator=g).double()
    if Q == K:
        s[:, :, 0] = -math.inf
    s.requires_grad_()
    dO = torch.randn(B, Hq, Q, D, generator=g).double()
    o, lse = naive_dma_attention(q, k, v, s, w, return_lse=True)
    dk, dv, ds = torch.autograd.grad(o, (k, v, s), dO)
    return {"q": q, "k": k.detach(), "v": v.detach(), "s": s.detach(), "dO": dO,
            "e": key_lifetimes(s.detach(), w), "lse": lse.double(),
            "delta": (dO * o.detach()).sum(-1), "dk": dk, "dv": dv, "ds": ds}


@exercise(points=4)
def check_key_major_backward(kernel, strict: bool = False, *,
                             seed: int | None = None) -> Result:
    """``kernel(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr)``, grid
    ``(cdiv(K, BN), B * Hkv)``: one program per block of BN keys of one KV head writes their
    dK, dV (fp32 ``[B, Hkv, K, D]``) and ds (fp32 ``[B, Hkv, K]``) once, no atomics.

    q, dO fp32 ``[B, Hq, Q, D]``; k, v fp32 ``[B, Hkv, K, D]``; s fp32 ``[B, Hkv, K]``; e int64
    ``[B, Hkv, K]``; lse, delta fp32 ``[B, Hq, Q]`` (the forward's log-sum-exp, ``-inf`` on an
    empty row, and ``rowsum(dO * O)``); all contiguous, D = 16. Launched under the interpreter
    with no torch function and no package kernel allowed, on guarded buffers, against float64
    autograd of ``naive_dma_attention``.
    """
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for B, Hq, Hkv, Q, K, w, BM, BN in KEY_MAJOR_CASES:
            c = backward_case(g, B, Hq, Hkv, Q, K, w)
            ins = [guarded(c[name].float().reshape(-1)).view for name in ("q", "k", "v", "s")]
            rows = [guarded(c[name].float().reshape(-1)).view for name in ("dO", "lse", "delta")]
            dk, dv = output((B * Hkv * K * KEY_MAJOR_D,)), output((B * Hkv * K * KEY_MAJOR_D,))
            ds = output((B * Hkv * K,))
            launch(kernel, (cdiv(K, BN), B * Hkv), *ins, guarded(c["e"].reshape(-1), fill=K).view,
                   *rows, dk.view, dv.view, ds.view, Q, K, Hq, Hkv, KEY_MAJOR_D**-0.5,
                   D=KEY_MAJOR_D, BM=BM, BN=BN)
            where = (f"B={B}, Hq={Hq}, Hkv={Hkv}, Q={Q}, K={K}, w={w}, BM={BM}, BN={BN} "
                     f"(seed {seed})")
            dv.check_written()
            for out in (dk, dv, ds):
                out.check_untouched(where)
            shape = (B, Hkv, K, KEY_MAJOR_D)
            expect_close(dv.view.view(shape), c["dv"], f"dv [B, Hkv, K, D], {where}", atol=1e-4,
                         rtol=1e-4)
            expect_close(dk.view.view(shape), c["dk"], f"dk [B, Hkv, K, D], {where}", atol=1e-4,
                         rtol=1e-4)
            expect_close(ds.view.view(B, Hkv, K), c["ds"], f"ds [B, Hkv, K], {where}", atol=1e-4,
                         rtol=1e-4)
    return run_checks("the key-major dK, dV, ds kernel", trials, strict=strict, seed=seed)
