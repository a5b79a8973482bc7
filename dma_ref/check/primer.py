"""Checkers for the Triton primer's puzzles: each launches the learner's ``@triton.jit`` kernel
(under the interpreter on a CPU) on fresh seeded inputs, against a PyTorch spec.

Every puzzle fixes the kernel's signature and its grid; the checker allocates guarded buffers
(``triton_run``: NaN around the inputs, a sentinel around the outputs), gives some inputs a
non-contiguous layout (padded rows, transposed), uses sizes no block divides, and reports the
failing shape, the first wrong index and the seed. The specs are the ``spec_*`` functions.
"""

from __future__ import annotations

import math

import torch

from ..lifetimes import key_lifetimes
from ..numerics import cdiv, next_pow2
from .core import Result, exercise, generator, resolve_seed, run_checks
from .triton_run import expect_close, guarded, launch, output

F32 = torch.float32


# ------------------------------------------------------------------------------------ specs

def spec_scale_add(x: torch.Tensor, y: torch.Tensor, a: float) -> torch.Tensor:
    """Puzzle 1: ``z = a * x + y``; x, y, z ``[N]``."""
    return a * x + y


def spec_add_row(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Puzzle 2: add the row vector ``b [N]`` to every row of ``x [M, N]``."""
    return x + b[None, :]


def spec_row_sums(x: torch.Tensor) -> torch.Tensor:
    """Puzzle 3: ``z[i] = sum_j x[i, j]``; x ``[M, N]`` with rows longer than one block."""
    return x.sum(dim=1)


def spec_row_softmax(x: torch.Tensor) -> torch.Tensor:
    """Puzzle 4: softmax of each row of ``x [M, N]``."""
    m = x.max(dim=1, keepdim=True).values          # subtract the row max: exp never overflows
    p = torch.exp(x - m)
    return p / p.sum(dim=1, keepdim=True)


def spec_matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Puzzle 5: ``z = x @ y``; x ``[M, K]``, y ``[K, N]``."""
    return x @ y


def causal_keep(Q: int, K: int, j: torch.Tensor) -> torch.Tensor:
    """bool ``[Q, len(j)]``: row i (at position ``K - Q + i``) may see key ``j`` iff ``j <= p``."""
    p = torch.arange(Q)[:, None] + (K - Q)
    return j[None, :] <= p


def spec_causal_logits(q: torch.Tensor, k: torch.Tensor, s: torch.Tensor,
                       scale: float) -> torch.Tensor:
    """Puzzle 6: ``x[i, j] = scale * q_i . k_j + s_j`` where ``j <= K - Q + i``, else ``-inf``;
    q ``[Q, D]``, k ``[K, D]``, s ``[K]`` -> ``[Q, K]``."""
    x = scale * q @ k.T + s[None, :]
    return x.masked_fill(~causal_keep(q.shape[0], k.shape[0], torch.arange(k.shape[0])), -math.inf)


def spec_gathered_logits(q: torch.Tensor, k: torch.Tensor, s: torch.Tensor, e: torch.Tensor,
                         idx: torch.Tensor, scale: float) -> torch.Tensor:
    """Puzzle 7: the logits of the gathered keys ``j = idx[c]`` (any order), ``-inf`` unless
    ``j <= p_i < e_j``; e int64 ``[K]`` (lifetimes), idx int64 ``[n]`` -> ``[Q, n]``."""
    Q, K = q.shape[0], k.shape[0]
    p = torch.arange(Q)[:, None] + (K - Q)
    keep = causal_keep(Q, K, idx) & (p < e[idx][None, :])
    x = scale * q @ k[idx].T + s[idx][None, :]
    return x.masked_fill(~keep, -math.inf)


def spec_gathered_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                            e: torch.Tensor, idx: torch.Tensor,
                            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Puzzle 8: softmax attention of each row over its kept gathered keys: ``(o [Q, D], lse [Q])``.
    A row that keeps nothing (or only ``-inf`` logits) gets ``o = 0`` and ``lse = -inf``."""
    x = spec_gathered_logits(q, k, s, e, idx, scale)
    lse = torch.logsumexp(x, dim=1)
    empty = lse == -math.inf
    P = torch.exp(x - torch.where(empty, 0.0, lse)[:, None])
    return P @ v[idx], lse


# ------------------------------------------------------------------------------- checkers

def randn(g: torch.Generator, *shape: int, magnitude: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64) * magnitude


@exercise(points=1)
def check_scale_add(kernel, strict: bool = False, *, seed: int | None = None) -> Result:
    """``kernel(x_ptr, y_ptr, z_ptr, a, N, BLOCK: tl.constexpr)``, grid ``(cdiv(N, BLOCK),)``."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for N, BLOCK in [(100, 32), (37, 16), (64, 64), (1, 16), (130, 64)]:
            x, y, a = randn(g, N), randn(g, N), float(randn(g, 1))
            z = output((N,))
            launch(kernel, (cdiv(N, BLOCK),), guarded(x.float()).view, guarded(y.float()).view,
                   z.view, a, N, BLOCK=BLOCK)
            where = f"N={N}, BLOCK={BLOCK} (seed {seed})"
            z.check_written()
            z.check_untouched(where)
            expect_close(z.view, spec_scale_add(x, y, a), where)
    return run_checks("puzzle 1: scale and add", trials, strict=strict, seed=seed)


@exercise(points=1)
def check_add_row(kernel, strict: bool = False, *, seed: int | None = None) -> Result:
    """``kernel(x_ptr, b_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
    BM: tl.constexpr, BN: tl.constexpr)``, grid ``(cdiv(M, BM), cdiv(N, BN))``."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for M, N, BM, BN, layout in [(20, 37, 16, 16, "padded"), (9, 50, 8, 32, "transposed"),
                                     (33, 12, 16, 8, "contiguous"), (5, 70, 4, 16, "transposed")]:
            x, b = randn(g, M, N), randn(g, N)
            z = output((M, N), layout="padded")
            xg = guarded(x.float(), layout)
            launch(kernel, (cdiv(M, BM), cdiv(N, BN)), xg.view, guarded(b.float()).view, z.view,
                   M, N, *xg.view.stride(), *z.view.stride(), BM=BM, BN=BN)
            where = f"M={M}, N={N}, BM={BM}, BN={BN}, x {layout} {xg.view.stride()} (seed {seed})"
            z.check_written()
            z.check_untouched(where)
            expect_close(z.view, spec_add_row(x, b), where)
    return run_checks("puzzle 2: add a row vector (2-D grid, strides)", trials, strict=strict,
                      seed=seed)


@exercise(points=2)
def check_row_sums(kernel, strict: bool = False, *, seed: int | None = None) -> Result:
    """``kernel(x_ptr, z_ptr, M, N, stride_xm, stride_xn, BM: tl.constexpr,
    BN: tl.constexpr)``, grid ``(cdiv(M, BM),)``: a loop over the row in tiles of BN columns."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for M, N, BM, BN, layout in [(10, 100, 4, 16, "padded"), (7, 33, 8, 8, "transposed"),
                                     (16, 16, 16, 32, "contiguous"), (3, 129, 2, 64, "padded")]:
            x = randn(g, M, N)
            z = output((M,))
            xg = guarded(x.float(), layout)
            launch(kernel, (cdiv(M, BM),), xg.view, z.view, M, N, *xg.view.stride(), BM=BM, BN=BN)
            where = f"M={M}, N={N}, BM={BM}, BN={BN}, x {layout} {xg.view.stride()} (seed {seed})"
            z.check_written()
            z.check_untouched(where)
            expect_close(z.view, spec_row_sums(x), where, atol=1e-4)
    return run_checks("puzzle 3: row sums of long rows", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_row_softmax(kernel, strict: bool = False, *, seed: int | None = None) -> Result:
    """``kernel(x_ptr, z_ptr, M, N, stride_xm, stride_xn, stride_zm, stride_zn,
    BM: tl.constexpr, BN: tl.constexpr)``, grid ``(cdiv(M, BM),)``, ``BN = next_pow2(N)``.
    Logits reach 1e3 (a softmax without the max overflows) and some rows are all negative."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for M, N, BM, magnitude, layout in [(12, 20, 4, 3.0, "padded"),
                                            (5, 7, 8, 1e3, "transposed"),
                                            (16, 33, 16, 30.0, "contiguous")]:
            x = randn(g, M, N, magnitude=magnitude)
            x[0] = -x[0].abs() - 2.0                    # a row with no logit above -2
            BN = next_pow2(N)
            z = output((M, N), layout="padded")
            xg = guarded(x.float(), layout)
            launch(kernel, (cdiv(M, BM),), xg.view, z.view, M, N, *xg.view.stride(),
                   *z.view.stride(), BM=BM, BN=BN)
            where = (f"M={M}, N={N}, BM={BM}, BN={BN}, logits ~{magnitude:g}, x {layout} "
                     f"(seed {seed})")
            z.check_written()
            z.check_untouched(where)
            expect_close(z.view, spec_row_softmax(x.float().double()), where)
    return run_checks("puzzle 4: row softmax", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_matmul(kernel, strict: bool = False, *, seed: int | None = None) -> Result:
    """``kernel(x_ptr, y_ptr, z_ptr, M, N, K, stride_xm, stride_xk, stride_yk, stride_yn,
    stride_zm, stride_zn, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr)``, grid
    ``(cdiv(M, BM), cdiv(N, BN))``, all blocks 16."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for M, N, K, lx, ly in [(20, 18, 37, "padded", "transposed"), (16, 16, 16, "contiguous",
                                "contiguous"), (33, 5, 40, "transposed", "padded")]:
            x, y = randn(g, M, K), randn(g, K, N)
            z = output((M, N), layout="padded")
            xg, yg = guarded(x.float(), lx), guarded(y.float(), ly)
            launch(kernel, (cdiv(M, 16), cdiv(N, 16)), xg.view, yg.view, z.view, M, N, K,
                   *xg.view.stride(), *yg.view.stride(), *z.view.stride(), BM=16, BN=16, BK=16)
            where = f"M={M}, N={N}, K={K}, x {lx}, y {ly} (seed {seed})"
            z.check_written()
            z.check_untouched(where)
            expect_close(z.view, spec_matmul(x.float().double(), y.float().double()), where,
                         atol=1e-4)
    return run_checks("puzzle 5: a tiled matmul with tl.dot", trials, strict=strict, seed=seed)


@exercise(points=2)
def check_causal_logits(kernel, strict: bool = False, *, seed: int | None = None) -> Result:
    """``kernel(q_ptr, k_ptr, s_ptr, z_ptr, Q, K, scale, stride_qm, stride_qd, stride_km,
    stride_kd, stride_zm, stride_zn, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr)``,
    grid ``(cdiv(Q, BM), cdiv(K, BN))``, D = BM = BN = 16. Q < K in most cases."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for Q, K, lk in [(20, 37, "transposed"), (33, 33, "padded"), (5, 50, "contiguous")]:
            q, k, s = randn(g, Q, 16), randn(g, K, 16), randn(g, K)
            qg, kg = guarded(q.float(), "padded"), guarded(k.float(), lk)
            z = output((Q, K), layout="padded")
            launch(kernel, (cdiv(Q, 16), cdiv(K, 16)), qg.view, kg.view, guarded(s.float()).view,
                   z.view, Q, K, 0.25, *qg.view.stride(), *kg.view.stride(), *z.view.stride(),
                   D=16, BM=16, BN=16)
            where = f"Q={Q}, K={K}, D=16, k {lk} (seed {seed})"
            z.check_written()
            z.check_untouched(where)
            want = spec_causal_logits(*(t.float().double() for t in (q, k, s)), 0.25)
            expect_close(z.view, want, where)
    return run_checks("puzzle 6: a masked QK^T tile", trials, strict=strict, seed=seed)


def dma_case(g: torch.Generator, Q: int, K: int, w: int, n: int, D: int = 16):
    """q, k, v, s (float64) and e, idx (int64) of one head: e from the row-mode lifetimes of s;
    idx ``n`` distinct keys in random order. With ``Q = K`` key 0 gets the score -inf, so row 0
    keeps only a -inf logit (an empty row)."""
    q, k, v, s = randn(g, Q, D), randn(g, K, D), randn(g, K, D), randn(g, K)
    e = key_lifetimes(s.float()[None, None], w)[0, 0]
    if Q == K:
        s[0] = -math.inf
    idx = torch.randperm(K, generator=g)[:n]
    if Q == K and not (idx == 0).any():
        idx[0] = 0
    return q, k, v, s, e, idx


DMA_CASES = [(20, 37, 5, 30), (33, 33, 4, 33), (7, 50, 12, 21)]      # Q, K, w, n


@exercise(points=2)
def check_gathered_logits(kernel, strict: bool = False, *, seed: int | None = None) -> Result:
    """``kernel(q_ptr, k_ptr, s_ptr, e_ptr, idx_ptr, z_ptr, Q, K, n, scale, stride_qm,
    stride_km, stride_zm, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr)``, grid
    ``(cdiv(Q, BM), cdiv(n, BN))``, D = BM = BN = 16; rows of q, k, z contiguous inside."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for Q, K, w, n in DMA_CASES:
            q, k, _, s, e, idx = dma_case(g, Q, K, w, n)
            qg, kg = guarded(q.float(), "padded"), guarded(k.float(), "padded")
            idx_g = guarded(idx, fill=K)             # an unmasked index load gathers key K: NaN
            z = output((Q, n), layout="padded")
            launch(kernel, (cdiv(Q, 16), cdiv(n, 16)), qg.view, kg.view, guarded(s.float()).view,
                   guarded(e, fill=K).view, idx_g.view, z.view, Q, K, n, 0.25, qg.view.stride(0),
                   kg.view.stride(0), z.view.stride(0), D=16, BM=16, BN=16)
            where = f"Q={Q}, K={K}, w={w}, n={n} gathered keys (seed {seed})"
            z.check_written()
            z.check_untouched(where)
            want = spec_gathered_logits(q.float().double(), k.float().double(), s.float().double(),
                                        e, idx, 0.25)
            expect_close(z.view, want, where)
    return run_checks("puzzle 7: the keep test of a gathered tile", trials, strict=strict,
                      seed=seed)


@exercise(points=3)
def check_gathered_attention(kernel, strict: bool = False, *, seed: int | None = None) -> Result:
    """``kernel(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, idx_ptr, o_ptr, lse_ptr, Q, K, n, scale,
    stride_qm, stride_km, stride_vm, stride_om, D: tl.constexpr, BM: tl.constexpr,
    BN: tl.constexpr)``, grid ``(cdiv(Q, BM),)``: a loop over idx in chunks of BN with online
    softmax. D = BM = BN = 16."""
    seed = resolve_seed(seed)

    def trials() -> None:
        g = generator(seed)
        for Q, K, w, n in DMA_CASES:
            q, k, v, s, e, idx = dma_case(g, Q, K, w, n)
            qg, kg, vg = (guarded(t.float(), "padded") for t in (q, k, v))
            o, lse = output((Q, 16), layout="padded"), output((Q,))
            launch(kernel, (cdiv(Q, 16),), qg.view, kg.view, vg.view, guarded(s.float()).view,
                   guarded(e, fill=K).view, guarded(idx, fill=K).view, o.view, lse.view,
                   Q, K, n, 0.25, qg.view.stride(0), kg.view.stride(0), vg.view.stride(0),
                   o.view.stride(0), D=16, BM=16, BN=16)
            where = f"Q={Q}, K={K}, w={w}, n={n} gathered keys (seed {seed})"
            o.check_written()
            for out in (o, lse):
                out.check_untouched(where)
            o_want, lse_want = spec_gathered_attention(*(t.float().double() for t in (q, k, v, s)),
                                                       e, idx, 0.25)
            expect_close(lse.view, lse_want, f"lse, {where}")
            expect_close(o.view, o_want, f"o, {where}")
    return run_checks("puzzle 8: the gathered-tile loop with online softmax", trials,
                      strict=strict, seed=seed)
