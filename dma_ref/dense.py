"""Dense softmax attention, written from the formula (no fused kernels).

    logit_ij = scale * (q_i . k_j) + bias_ij        (kept pairs only)
    p_ij     = softmax_j(logit_ij)
    o_i      = sum_j p_ij v_j

Query row ``i`` sits at absolute position ``p_i = K - Q + i`` (bottom-right alignment), so a
causal row keeps the keys ``j <= p_i``. This is the yardstick every other implementation in
the package is checked against.
"""

from __future__ import annotations

import torch

from .validate import check_qkv, default_scale


def query_positions(Q: int, K: int, device=None) -> torch.Tensor:
    """int64 ``[Q]``: absolute position ``p_i = K - Q + i`` of each query row (bottom-right)."""
    return torch.arange(K - Q, K, device=device)


def causal_mask(Q: int, K: int, device=None) -> torch.Tensor:
    """bool ``[Q, K]``: ``True`` where key ``j <= p_i = K - Q + i`` (bottom-right aligned)."""
    p = query_positions(Q, K, device)[:, None]
    j = torch.arange(K, device=device)[None, :]
    return j <= p


def expand_kv(x: torch.Tensor, Hq: int) -> torch.Tensor:
    """``[B, Hkv, ...] -> [B, Hq, ...]``: query head ``h`` reads KV head ``h // G`` (GQA)."""
    G = Hq // x.shape[1]
    return x.repeat_interleave(G, dim=1)


def masked_softmax_attention(logits: torch.Tensor, keep: torch.Tensor, v: torch.Tensor):
    """Softmax over kept entries; rows with nothing kept give ``o = 0`` and ``lse = -inf``.

    logits ``[B, H, Q, K]``, keep bool broadcastable to it, v ``[B, H, K, D]``.
    Returns ``(o [B, H, Q, D], lse [B, H, Q])`` in the dtype of ``logits``.
    """
    logits = logits.masked_fill(~keep, float("-inf"))
    # An empty row (nothing kept, or only -inf logits) has lse = -inf and logits - lse = nan.
    # Replace its logits by zeros *before* logsumexp: a torch.where after it would still send
    # 0 * nan = nan back through logsumexp's backward into q, k and s.
    with torch.no_grad():
        finite = torch.isfinite(logits.amax(dim=-1))                      # [B, H, Q]
    safe = torch.where(finite[..., None], logits, torch.zeros_like(logits))
    lse_safe = torch.logsumexp(safe, dim=-1)
    p = torch.exp(safe - lse_safe[..., None])
    p = torch.where(keep & finite[..., None], p, torch.zeros_like(p))
    lse = torch.where(finite, lse_safe, torch.full_like(lse_safe, float("-inf")))
    return p @ v, lse


def _check_pairwise(x, name: str, B: int, Hq: int, Q: int, K: int, device: torch.device) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{name} must be a 4-dim tensor of shape [B, Hq, Q, K] = {[B, Hq, Q, K]} "
                         f"(size-1 dims broadcast); got {getattr(x, 'shape', type(x).__name__)}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but q is on {device}; all inputs must share a device")
    for got, want, sym in zip(x.shape, (B, Hq, Q, K), "BHQK"):
        if got not in (1, want):
            raise ValueError(f"{name} must have shape [B, Hq, Q, K] = {[B, Hq, Q, K]} (size-1 dims "
                             f"broadcast); dim {sym} is {got}")


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None, bias: torch.Tensor | None = None,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Plain softmax attention with optional causal mask, additive bias and boolean mask.

    q ``[B, Hq, Q, D]``, k and v ``[B, Hkv, K, D]`` with ``Hq = G * Hkv``; any float dtype.
    bias: float ``[B, Hq, Q, K]`` added to the logits; mask: bool ``[B, Hq, Q, K]``, ``True`` =
    keep. Size-1 dims of bias and mask broadcast (explicitly documented, PyTorch's rule).
    Returns o ``[B, Hq, Q, D]`` in q's dtype; fully masked rows give 0. The logits, softmax and
    ``P @ v`` run in fp32 (fp64 for fp64 inputs), as SDPA accumulates: in fp16 or bf16 a
    softmax rounds its row sums away.
    """
    B, Hq, _Hkv, Q, K, D = check_qkv(q, k, v)
    scale = default_scale(scale, D)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    k, v = expand_kv(k, Hq).to(acc), expand_kv(v, Hq).to(acc)
    logits = scale * (q.to(acc) @ k.transpose(-1, -2))
    if bias is not None:
        _check_pairwise(bias, "bias", B, Hq, Q, K, q.device)
        if not bias.is_floating_point():
            raise TypeError(f"bias must be a float tensor (added to the logits), got {bias.dtype}; "
                            "pass a bool keep-mask as mask=")
        logits = logits + bias.to(acc)
    keep = torch.ones(Q, K, dtype=torch.bool, device=q.device)
    if causal:
        keep = causal_mask(Q, K, q.device)
    if mask is not None:
        _check_pairwise(mask, "mask", B, Hq, Q, K, q.device)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = keep), got {mask.dtype}")
        keep = keep & mask
    o, _ = masked_softmax_attention(logits, keep, v)
    return o.to(q.dtype)
