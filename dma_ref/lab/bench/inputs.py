"""The benchmark's inputs: one shared set of q, k, v, s per (D, N), and the masks the O(N^2)
baselines need, built in row chunks from the lifetimes (no K x K tensor beyond the one a
baseline itself takes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ...lifetimes import key_lifetimes, mask_from_lifetimes
from ...scores import dma_scores


@dataclass
class Case:
    """The shared inputs of one (D, N): q ``[B,Hq,N,D]``, k, v ``[B,Hkv,N,D]``, s ``[B,Hkv,N]``
    (bf16 leaves requiring grad), dO like q, and caches of lifetimes per window."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    s: torch.Tensor
    do: torch.Tensor
    lifetimes: dict = field(default_factory=dict)
    e_note: dict = field(default_factory=dict)
    ref: dict = field(default_factory=dict)           # window -> fp32 naive output (small N)

    @property
    def G(self) -> int:
        return self.q.shape[1] // self.k.shape[1]


def make_case(B: int, Hq: int, Hkv: int, N: int, D: int, seed: int = 0) -> Case:
    """Random bf16 inputs; scores from values as in paper Eq. 3 (``dma_scores``), bf16.

    delta ~ N(0, 1/(Hkv·D)) makes ``x`` about standard normal and A = 1 gives
    ``s = exp(softplus(x))`` in about [1.3, 20]: bf16 rounds it to a few hundred distinct values,
    so ties are common, as in a real bf16 model.
    """
    g = torch.Generator(device="cuda").manual_seed(seed)
    dt = torch.bfloat16
    q = torch.randn(B, Hq, N, D, generator=g, device="cuda", dtype=dt)
    k = torch.randn(B, Hkv, N, D, generator=g, device="cuda", dtype=dt)
    v = torch.randn(B, Hkv, N, D, generator=g, device="cuda", dtype=dt)
    delta = torch.randn(Hkv * D, Hkv, generator=g, device="cuda") * (Hkv * D) ** -0.5
    with torch.no_grad():
        s = dma_scores(v.float(), delta, torch.ones(Hkv, device="cuda")).to(dt)
    do = torch.randn(B, Hq, N, D, generator=g, device="cuda", dtype=dt)
    for t in (q, k, v, s):
        t.requires_grad_(True)
    return Case(q, k, v, s, do)


def get_lifetimes(case: Case, w: int) -> torch.Tensor:
    """Lifetimes for window w from the kernels' builder (the masks of the O(N^2) baselines);
    the first time, they are compared exactly with the reference ``dma_ref.key_lifetimes`` (on
    the CPU, O(K log K)) and the time of that reference build is noted."""
    from ...kernels import build_lifetimes  # lazily: importing it defines Triton kernels

    if w in case.lifetimes:
        return case.lifetimes[w]
    s = case.s.detach()
    t0 = time.perf_counter()
    e_ref = key_lifetimes(s.float().cpu(), w)
    t_ref = (time.perf_counter() - t0) * 1e3
    note = f"lifetimes: reference builder (CPU) {t_ref:.0f} ms"
    e = build_lifetimes(s, w)
    note += f", kernels builder agrees={bool(torch.equal(e.cpu().long(), e_ref))}"
    case.lifetimes[w] = e
    case.e_note[w] = note
    return e


def dense_mask_from_lifetimes(e: torch.Tensor, rows: int = 4096) -> torch.Tensor:
    """bool ``[B, Hkv, K, K]`` from lifetimes, built in row chunks (for the official kernel)."""
    B, H, K = e.shape
    out = torch.empty(B, H, K, K, dtype=torch.bool, device=e.device)
    for p0 in range(0, K, rows):
        out[:, :, p0:p0 + rows] = mask_from_lifetimes(e, min(rows, K - p0), first=p0)
    return out


def dense_bias_from_lifetimes(e: torch.Tensor, s: torch.Tensor, rows: int = 4096) -> torch.Tensor:
    """``[B, Hkv, K, K]`` in s's dtype: ``s_j`` on kept pairs, ``-inf`` elsewhere."""
    B, H, K = e.shape
    out = torch.empty(B, H, K, K, dtype=s.dtype, device=e.device)
    neg = torch.tensor(float("-inf"), dtype=s.dtype, device=e.device)
    for p0 in range(0, K, rows):
        out[:, :, p0:p0 + rows] = torch.where(mask_from_lifetimes(e, min(rows, K - p0), first=p0),
                                              s[:, :, None, :], neg)
    return out
