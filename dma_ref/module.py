"""``DMAAttention``: a drop-in attention layer with a trainable dynamic mask.

    q = x W_q,  k = x W_k,  v = x W_v            (GQA: Hq query heads, Hkv KV heads)
    s = dma_scores(v, Delta, A)                   (paper Eq. 3, one score per key and KV head)
    o = DMA(q, k, v, s, w)  ->  y = o W_o

Init: ``A ~ N(0, 0.02)`` (DESIGN.md 3.1; A = 0 would make every score 1 and give Delta no
gradient at step 0), ``Delta ~ N(0, 1 / (Hkv*D))`` (unit-variance x for unit-variance v).
"""

from __future__ import annotations

import torch
from torch import nn

from .naive import naive_dma_attention
from .rope import apply_rope, rope_angles
from .scores import dma_scores
from .validate import check_flag, check_mode, check_window

BACKENDS = ("naive", "triton")


class DMAAttention(nn.Module):
    """Multi-head (GQA) attention with Dynamic Mask Attention.

    Args:
        hidden_size: model width C; input and output are ``[B, N, C]``.
        num_heads: query heads Hq. num_kv_heads: KV heads Hkv (default Hq); Hq % Hkv == 0.
        head_dim: D (default C // Hq).
        window: w, keys kept per query.
        form: "exp" (paper) or "log" (official code) score form.
        causal, mode: as in ``naive_dma_attention``.
        rope: apply rotary embeddings to q and k (v, hence s, is never rotated).
        backend: "naive" (PyTorch, any device) or "triton" (``dma_ref.kernels``).
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, window: int = 256, *, form: str = "exp",
                 causal: bool = True, mode: str = "row", rope: bool = True,
                 rope_base: float = 10000.0, backend: str = "naive"):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads < 1 or num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a positive multiple of num_kv_heads={num_kv_heads}")
        head_dim = hidden_size // num_heads if head_dim is None else head_dim
        if head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {head_dim}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if form not in ("exp", "log"):
            raise ValueError(f"form must be 'exp' or 'log', got {form!r}")
        if rope and head_dim % 2:
            raise ValueError(f"rope=True needs an even head_dim, got {head_dim}")
        check_window(window)
        check_mode(mode)
        check_flag(causal, "causal")
        self.hidden_size, self.Hq, self.Hkv, self.D = hidden_size, num_heads, num_kv_heads, head_dim
        self.window, self.form, self.causal, self.mode = window, form, causal, mode
        self.rope, self.rope_base, self.backend = rope, rope_base, backend
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)
        self.delta = nn.Parameter(torch.randn(num_kv_heads * head_dim, num_kv_heads)
                                  * (num_kv_heads * head_dim) ** -0.5)
        self.A = nn.Parameter(torch.randn(num_kv_heads) * 0.02)

    def project(self, x: torch.Tensor):
        """``x [B, N, C] -> (q [B, Hq, N, D], k, v [B, Hkv, N, D], s [B, Hkv, N])``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape [B, N, C={self.hidden_size}], "
                            f"got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x must have shape [B, N, C={self.hidden_size}]; got {tuple(x.shape)}")
        if x.dtype != self.q_proj.weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"x has dtype {x.dtype} but the module's parameters are "
                            f"{self.q_proj.weight.dtype}; cast one of them (e.g. module.to(x.dtype))")
        if x.device != self.q_proj.weight.device:
            raise ValueError(f"x is on {x.device} but the module's parameters are on "
                             f"{self.q_proj.weight.device}; move one of them")
        B, N, _ = x.shape
        q = self.q_proj(x).view(B, N, self.Hq, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, N, self.Hkv, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, N, self.Hkv, self.D).transpose(1, 2)
        s = dma_scores(v, self.delta, self.A, form=self.form)
        if self.rope:
            cos, sin = rope_angles(torch.arange(N, device=x.device), self.D, self.rope_base)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v, s

    def attend(self, q, k, v, s) -> torch.Tensor:
        """The DMA core on projected tensors, through the chosen backend."""
        if self.backend == "triton":
            from .kernels import dma_attention  # imported lazily: it defines Triton kernels
            return dma_attention(q, k, v, s, self.window, causal=self.causal, mode=self.mode)
        return naive_dma_attention(q, k, v, s, self.window, causal=self.causal, mode=self.mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, C] -> y [B, N, C]``."""
        q, k, v, s = self.project(x)
        o = self.attend(q, k, v, s)
        B, _, N, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(B, N, self.Hq * self.D))
