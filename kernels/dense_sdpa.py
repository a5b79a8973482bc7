"""DMA's dense regime through PyTorch's fused attention (cuDNN on Hopper).

With ``w >= K`` no key is ever evicted: DMA is causal attention whose logits carry a per-key
bias, ``x_ij = scale q_i . k_j + s_j`` for ``j <= p_i``. The bias folds into the dot product
with two extra columns (and zero padding to a multiple of 8)::

    q~_i = [q_i, 1, 1, 0...],   k~_j = [k_j, hi_j, lo_j, 0...],   v~_j = [v_j, 0, 0, 0...]
    hi_j + lo_j = s_j / scale   (hi = t rounded to q's dtype, lo = the rest, rounded again)

so ``scale q~_i . k~_j = scale q_i . k_j + s_j`` to about 2^-16 of ``|s_j|`` (the fused kernels
accumulate the products in fp32), and causal attention over (q~, k~, v~) is DMA's output in its
first D columns. Autograd gives dq, dk, dv and ``ds_j = (d hi_j) / scale = sum_i dS_ij``.
Used by ``dma_attention`` when it applies (``applies``): the Triton dense path reaches ~0.6x
cuDNN forward and ~0.45x backward on the H200 (figures/bench/PERF_NOTES.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["DENSE_VIA_SDPA", "applies", "dense_dma_sdpa"]

# Off until measured on the H200 (scripts/gpu_variants.py times both): the Triton kernels.
DENSE_VIA_SDPA = False
BACKENDS = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
            SDPBackend.EFFICIENT_ATTENTION]


def applies(q: torch.Tensor, k: torch.Tensor, window: int, *, causal: bool, return_lse: bool,
            forced_config: bool) -> bool:
    """Whether ``dma_attention`` hands this call to ``dense_dma_sdpa``: the dense regime
    (``w >= K``), causal with ``Q == K`` (the fused kernels align the causal mask top-left), bf16
    on CUDA (fp16 could overflow ``s / scale``), D <= 128, no lse asked for and no forced tile."""
    Q, K, D = q.shape[2], k.shape[2], q.shape[3]
    return (DENSE_VIA_SDPA and q.device.type == "cuda" and q.dtype == torch.bfloat16
            and causal and window >= K and Q == K and D <= 128 and not return_lse
            and not forced_config)


def dense_dma_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                   scale: float, backends: list[SDPBackend] | None = None) -> torch.Tensor:
    """DMA with ``w >= K`` (causal, ``Q == K``) as fused causal attention.

    q ``[B, Hq, N, D]``, k, v ``[B, Hkv, N, D]`` (Hq = G Hkv; k, v are repeated to Hq heads),
    s ``[B, Hkv, N]`` any float dtype (finite or -inf). Returns o ``[B, Hq, N, D]`` in q's dtype,
    differentiable in q, k, v and s. ``backends``: SDPA backends in order of preference
    (default ``BACKENDS``; the math backend also runs on a CPU in any dtype, for tests).
    """
    B, Hq, N, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    pad = 8 - 2                                   # D + 8: a multiple of 8 for the fused kernels
    t = s.to(torch.promote_types(s.dtype, torch.float32)) / scale
    hi = t.to(q.dtype)
    # -inf scores: hi = -inf, lo = 0 (not nan); the key drops out as in the kernels.
    lo = torch.where(torch.isfinite(t), t - hi.to(t.dtype), 0.0).to(q.dtype)
    ones = q.new_ones(B, Hq, N, 2)
    zq = q.new_zeros(B, Hq, N, pad)
    zk = k.new_zeros(B, Hkv, N, pad)
    q_aug = torch.cat([q, ones, zq], dim=-1)
    k_aug = torch.cat([k, hi[..., None], lo[..., None], zk], dim=-1)
    v_aug = torch.cat([v, v.new_zeros(B, Hkv, N, 2 + pad)], dim=-1)
    if G > 1:
        k_aug = k_aug.repeat_interleave(G, dim=1)
        v_aug = v_aug.repeat_interleave(G, dim=1)
    with sdpa_kernel(backends or BACKENDS, set_priority=True):
        o = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, is_causal=True, scale=scale)
    return o[..., :D].contiguous()
