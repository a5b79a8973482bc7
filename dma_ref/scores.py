"""DMA scores from values (paper Eq. 3).

    x[b, j, h] = sum over (h', d) of v[b, h', j, d] * Delta[h'*D + d, h]
    s[b, h, j] = exp(A[h] * softplus(x[b, j, h]))      form="exp"  (the paper)
    s[b, h, j] = A[h] * softplus(x[b, j, h])           form="log"  (official code since 2025-10)

Both forms rank keys identically for any A (``s_exp = exp(s_log)`` and exp is increasing; in
bf16, rounding can tie exp-form scores that the log form keeps apart); they differ in the additive
bias that the score adds to the attention logits. One score per key and KV head, shared by the
G query heads of the group.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .validate import check_tensor

# exp(a) is +inf in float32 (and bfloat16, same exponent range) once a > ln(3.4e38) ~ 88.72: an
# infinite bias then turns the softmax of every row that keeps the key into NaN.
EXP_OVERFLOW = math.log(torch.finfo(torch.float32).max)


def score_exponent(v: torch.Tensor, delta: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``a = A * softplus(x)`` ``[B, Hkv, K]`` in v's dtype: the log-form score, and the exponent
    of the exp-form score ``s = exp(a)`` (which overflows once ``a > EXP_OVERFLOW``). Same
    arguments and checks as :func:`dma_scores`."""
    return dma_scores(v, delta, A, form="log")


def dma_scores(v: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, *, form: str = "exp") -> torch.Tensor:
    """Scores ``s [B, Hkv, K]`` from values ``v [B, Hkv, K, D]``.

    delta ``[Hkv*D, Hkv]`` (the paper's Delta), A ``[Hkv]``, any float dtypes: delta and A are
    cast to v's dtype (a module keeps them in fp32 while v may be bf16), and the result has v's
    dtype. Differentiable in v, delta and A.
    """
    check_tensor(v, "v", 4, "[B, Hkv, K, D]")
    B, Hkv, K, D = v.shape
    check_tensor(delta, "delta", 2, f"[Hkv*D, Hkv] = [{Hkv * D}, {Hkv}]")
    if tuple(delta.shape) != (Hkv * D, Hkv):
        raise ValueError(f"delta must have shape [Hkv*D, Hkv] = [{Hkv * D}, {Hkv}]; got {tuple(delta.shape)}")
    check_tensor(A, "A", 1, f"[Hkv] = [{Hkv}]")
    if tuple(A.shape) != (Hkv,):
        raise ValueError(f"A must have shape [Hkv] = [{Hkv}]; got {tuple(A.shape)}")
    if form not in ("exp", "log"):
        raise ValueError(f"form must be 'exp' or 'log', got {form!r}")
    for name, t in (("delta", delta), ("A", A)):
        if t.device != v.device:
            raise ValueError(f"{name} is on {t.device} but v is on {v.device}")
    # [B, Hkv, K, D] -> [B, K, Hkv*D]: token j's values of all KV heads, head-major.
    v_tokens = v.permute(0, 2, 1, 3).reshape(B, K, Hkv * D)
    x = v_tokens @ delta.to(v.dtype)                    # [B, K, Hkv]
    a_softplus = A.to(v.dtype) * F.softplus(x)          # [B, K, Hkv], A broadcasts over heads
    s = torch.exp(a_softplus) if form == "exp" else a_softplus
    return s.transpose(1, 2).contiguous()               # [B, Hkv, K]
