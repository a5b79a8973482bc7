"""Checkers for notebook 07 (Triton backward): the softmax backward of one gathered tile,
``dS = P * (dP - Delta)``, and the accumulation of the score gradient ``ds`` from such tiles."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .core import Result, context, exercise, expect_tensor, generator, resolve_seed, run_checks


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
