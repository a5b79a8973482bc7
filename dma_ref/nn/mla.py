"""Multi-head latent attention (MLA, DeepSeek-V2, https://arxiv.org/abs/2405.04434, Section 2.1).

Keys and values are not projected from x directly but from one shared latent vector per token,
so a decoder caches ``d_c + d_R`` numbers per token instead of ``2 Hkv D``::

    c      = RMSNorm(x W_DKV)                     latent, [B, N, d_c]       (d_c = d_model / 4)
    k_nope = c W_UK,  v = c W_UV                  per-head up-projections, [B, Hkv, N, D]
    k_R    = rope(x W_KR)                         ONE rotary key shared by every head, [B, 1, N, d_R]
    q      = [x W_Q,  rope(x W_QR)]               [B, Hq, N, D + d_R]
    k      = [k_nope, k_R]                        [B, Hkv, N, D + d_R]
    o      = causal softmax(q k^T / sqrt(D + d_R)) v,   y = o W_O

RoPE is "decoupled": the rotation sits on the extra ``d_R`` channels only, so that ``W_UK``
could be folded into the query at inference time (rotating ``k_nope`` would forbid it).
Sizes: ``d_c = d_model / 4`` (the ratio the DMA paper's comparison used), ``d_R = D / 2``
(DeepSeek-V2: D = 128, d_R = 64). The queries are projected from x directly (no query latent;
DeepSeek-V2-Lite does the same). GQA applies to the up-projections: ``num_kv_heads`` heads of
``k_nope`` and v, each read by ``Hq / Hkv`` query heads.

``project`` returns ``(q, k, v, None)`` with q and k one ``d_R`` wider than v, so the Block, the
training loop, the checkpoints and the explorer (``keep``/``probs``: every past key, as MHA,
scaled by ``1 / sqrt(D + d_R)``) handle MLA like the other kinds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..dense import expand_kv
from ..rope import apply_rope, rope_angles
from .attention import ProjectedAttention


def mla_sizes(hidden_size: int, head_dim: int) -> tuple[int, int]:
    """``(d_c, d_R)``: the latent width ``hidden_size // 4`` and the rotary width ``head_dim //
    2`` rounded down to an even number (at least 2, RoPE rotates channel pairs)."""
    return max(1, hidden_size // 4), max(2, head_dim // 2 // 2 * 2)


class MultiHeadLatentAttention(ProjectedAttention):
    """MLA (see the module docstring). Args as ``ProjectedAttention``; ``latent_dim`` d_c and
    ``rope_dim`` d_R default to :func:`mla_sizes`. ``window`` is accepted and ignored (MLA keeps
    every past key). Parameters: ``q_proj [Hq (D + d_R), C]``, ``kv_down [d_c, C]``,
    ``kv_norm [d_c]``, ``k_up, v_up [Hkv D, d_c]``, ``k_rope [d_R, C]``, ``o_proj [C, Hq D]``."""

    kind = "mla"

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, window: int | None = None, *,
                 latent_dim: int | None = None, rope_dim: int | None = None,
                 rope_base: float = 10000.0):
        super().__init__(hidden_size, num_heads, num_kv_heads, head_dim, window, rope=False,
                         rope_base=rope_base)
        d_c, d_R = mla_sizes(hidden_size, self.D)
        d_c = d_c if latent_dim is None else latent_dim
        d_R = d_R if rope_dim is None else rope_dim
        if d_c < 1:
            raise ValueError(f"latent_dim must be >= 1, got {d_c}")
        if d_R < 2 or d_R % 2:
            raise ValueError(f"rope_dim must be even and >= 2 (RoPE rotates pairs), got {d_R}")
        self.d_c, self.d_R = d_c, d_R
        del self.k_proj, self.v_proj          # keys and values come from the latent instead
        self.q_proj = nn.Linear(hidden_size, num_heads * (self.D + d_R), bias=False)
        self.kv_down = nn.Linear(hidden_size, d_c, bias=False)
        self.kv_norm = nn.RMSNorm(d_c, eps=1e-6)
        self.k_up = nn.Linear(d_c, self.Hkv * self.D, bias=False)
        self.v_up = nn.Linear(d_c, self.Hkv * self.D, bias=False)
        self.k_rope = nn.Linear(hidden_size, d_R, bias=False)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, C] -> c [B, N, d_c]``: what a decoder would cache (with ``k_R``)."""
        return self.kv_norm(self.kv_down(x))

    def project(self, x: torch.Tensor):
        """``x [B, N, C] -> (q [B, Hq, N, D + d_R], k [B, Hkv, N, D + d_R], v [B, Hkv, N, D],
        None)``; the last d_R channels of q and k carry the rotation."""
        self.check_input(x)
        B, N, _ = x.shape
        H, Hkv, D, d_R = self.Hq, self.Hkv, self.D, self.d_R
        q = self.q_proj(x).view(B, N, H, D + d_R).transpose(1, 2)
        c = self.latent(x)
        k_nope = self.k_up(c).view(B, N, Hkv, D).transpose(1, 2)
        v = self.v_up(c).view(B, N, Hkv, D).transpose(1, 2)
        cos, sin = rope_angles(torch.arange(N, device=x.device), d_R, self.rope_base)
        k_R = apply_rope(self.k_rope(x)[:, None], cos, sin)                     # [B, 1, N, d_R]
        q = torch.cat([q[..., :D], apply_rope(q[..., D:], cos, sin)], dim=-1)
        k = torch.cat([k_nope, k_R.expand(B, Hkv, N, d_R)], dim=-1)
        return q, k, v, None

    def attend(self, q, k, v, s=None) -> torch.Tensor:
        """Causal softmax attention; SDPA's default scale ``1 / sqrt(q.shape[-1])`` is MLA's
        ``1 / sqrt(D + d_R)``. Returns ``o [B, Hq, N, D]``."""
        k, v = expand_kv(k, self.Hq), expand_kv(v, self.Hq)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
