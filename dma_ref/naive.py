"""Naive DMA: masked attention plus the score bias, with the mask materialised (O(Q*K) memory).

    keep_ij  = dma_mask(s, w)                 (a constant of the forward pass: top-k has no gradient)
               = j <= p_i < e_j                (causal row mode on the CPU: built from the key
                                                lifetimes e = key_lifetimes(s, w), the same mask
                                                without sorting every row, ~8x faster)
    logit_ij = scale * (q_i . k_j) + s_j      for kept j
    o_i      = sum_j softmax_j(logit_ij) v_j

Gradients reach q, k, v and s (through the bias); ``ds_j`` sums over every row and every query
head of the group that kept j. A row with no kept key gives ``o_i = 0`` and ``lse_i = -inf``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dense import expand_kv, masked_softmax_attention
from .lifetimes import key_lifetimes, mask_from_lifetimes
from .mask import dma_mask
from .validate import check_flag, check_mode, check_qkv, check_scores, check_window, default_scale


def keep_mask(s: torch.Tensor, window: int, q_len: int, *, causal: bool = True,
              mode: str = "row") -> torch.Tensor:
    """``dma_mask(s, window, q_len=q_len, causal=causal, mode=mode)``, bool ``[B, Hkv, Q, K]``;
    causal row mode on the CPU builds it from the key lifetimes (the same mask without sorting
    every row)."""
    if causal and mode == "row" and s.device.type == "cpu":
        return mask_from_lifetimes(key_lifetimes(s, window), q_len)
    return dma_mask(s, window, q_len=q_len, causal=causal, mode=mode)


def naive_dma_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                        window: int, *, causal: bool = True, scale: float | None = None,
                        mode: str = "row", return_lse: bool = False):
    """DMA attention by materialising the mask.

    q ``[B, Hq, Q, D]``; k, v ``[B, Hkv, K, D]``; s ``[B, Hkv, K]`` (the scores, added as a bias
    in fp32 or higher); window = w. Query row i sits at position ``K - Q + i``.
    Returns o ``[B, Hq, Q, D]`` in q's dtype, and with ``return_lse`` also the log-sum-exp of
    the kept logits, ``lse [B, Hq, Q]`` float32 (always float32, as the kernels return it;
    computed in float64 for float64 inputs, then rounded).
    """
    B, Hq, Hkv, Q, K, D = check_qkv(q, k, v, q_le_k=True)
    check_scores(s, B, Hkv, K, q.device)
    w = check_window(window)
    check_mode(mode)
    check_flag(causal, "causal")
    scale = default_scale(scale, D)
    if Q == 0:                                       # no query row: nothing to attend
        o = q.new_zeros(B, Hq, 0, D)
        return (o, torch.zeros(B, Hq, 0, dtype=torch.float32, device=q.device)) if return_lse else o

    with torch.no_grad():
        keep = expand_kv(keep_mask(s, w, Q, causal=causal, mode=mode), Hq)        # [B, Hq, Q, K]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    logits = scale * (q.to(acc) @ expand_kv(k, Hq).to(acc).transpose(-1, -2))
    logits = logits + expand_kv(s, Hq).to(acc)[:, :, None, :]
    o, lse = masked_softmax_attention(logits, keep, expand_kv(v, Hq).to(acc))
    o = o.to(q.dtype)
    return (o, lse.to(torch.float32)) if return_lse else o


def sdpa_dma_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                       window: int, *, causal: bool = True, scale: float | None = None) -> torch.Tensor:
    """Row-mode DMA through PyTorch's fused ``scaled_dot_product_attention``: the kept keys get
    the bias ``s_j``, the others ``-inf`` (one additive mask). The same function as
    ``naive_dma_attention(..., mode="row")`` to float rounding, gradients included, without its
    several Q x K temporaries (about 3x faster on a CPU in training). Row mode only: every row
    keeps ``min(w, p + 1) >= 1`` keys, so no row is all ``-inf`` (global mode can empty a row,
    which SDPA would turn into NaN); on the CPU, scores with ``-inf`` go to
    ``naive_dma_attention``, which keeps such rows at ``o = 0``. Shapes and dtypes as
    ``naive_dma_attention``; returns o ``[B, Hq, Q, D]``.
    """
    B, Hq, Hkv, Q, K, D = check_qkv(q, k, v, q_le_k=True)
    check_scores(s, B, Hkv, K, q.device)
    w = check_window(window)
    check_flag(causal, "causal")
    scale = default_scale(scale, D)
    if s.device.type == "cpu" and not bool(torch.isfinite(s).all()):
        # A -inf score can leave a row with no finite logit: SDPA would give NaN there, the
        # naive path gives the defined o = 0 (and finite gradients).
        return naive_dma_attention(q, k, v, s, w, causal=causal, scale=scale)
    with torch.no_grad():
        keep = keep_mask(s, w, Q, causal=causal)
    bias = torch.where(keep, s.to(q.dtype)[:, :, None, :], float("-inf"))       # [B, Hkv, Q, K]
    return F.scaled_dot_product_attention(q, expand_kv(k, Hq), expand_kv(v, Hq),
                                          attn_mask=expand_kv(bias, Hq), scale=scale)
