"""Attention layers: one projection base, and MHA, sliding-window (SWA) and DMA on top of it.

    q = x W_q,  k = x W_k,  v = x W_v            (GQA: Hq query heads, Hkv KV heads; RoPE on q, k)
    s = dma_scores(v, Delta, A)                   (DMA only: paper Eq. 3, one score per key and KV head)
    o = core(q, k, v, s)                          (the kind's attention)  ->  y = o W_o

DMA's init: ``A ~ N(0, 0.02)`` (A = 0 would make every score 1 and give Delta no gradient at
step 0), ``Delta ~ N(0, 1 / (Hkv*D))`` (unit-variance x for unit-variance v).

Each layer computes its attention in a parameter-free child module ``core``
(``core(q, k, v, s) -> o [B, Hq, N, D]``), so that hooks can observe exactly that part (the
training loop times it). ``keep``, ``lifetimes`` and ``probs`` give what a layer attends to, for
the explorer (``dma_ref.nn.kinds`` holds the rule).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..dense import expand_kv
from ..naive import naive_dma_attention, sdpa_dma_attention
from ..rope import apply_rope, rope_angles
from ..scores import dma_scores
from ..validate import check_flag, check_mode, check_window
from . import kinds

BACKENDS = ("naive", "sdpa", "triton")


def backend_for(device: torch.device | str | None) -> str:
    """DMA's backend on ``device``: the Triton kernels on CUDA, PyTorch's SDPA with the DMA mask
    as an additive bias elsewhere."""
    return "triton" if torch.device(device or "cpu").type == "cuda" else "sdpa"


class Core(nn.Module):
    """The attention itself, ``(q, k, v, s) -> o``, as a module of its own (no parameters)."""

    def __init__(self, attend: Callable[..., torch.Tensor]):
        super().__init__()
        self.attend = attend

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                s: torch.Tensor | None) -> torch.Tensor:
        return self.attend(q, k, v, s)


class ProjectedAttention(nn.Module):
    """The projections every kind shares: q, k, v from ``x [B, N, C]`` (RoPE on q and k), and
    the output projection. Subclasses set ``kind`` and define ``attend(q, k, v, s) -> o``."""

    kind = "mha"

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, window: int | None = None, *, rope: bool = True,
                 rope_base: float = 10000.0):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads < 1 or num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a positive multiple of num_kv_heads={num_kv_heads}")
        head_dim = hidden_size // num_heads if head_dim is None else head_dim
        if head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {head_dim}")
        if rope and head_dim % 2:
            raise ValueError(f"rope=True needs an even head_dim, got {head_dim}")
        if window is not None:
            check_window(window)
        self.hidden_size, self.Hq, self.Hkv, self.D = hidden_size, num_heads, num_kv_heads, head_dim
        self.window, self.rope, self.rope_base = window, rope, rope_base
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)
        self.core = Core(self.attend)

    def check_input(self, x: torch.Tensor) -> None:
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

    def scores(self, v: torch.Tensor) -> torch.Tensor | None:
        """DMA's scores from the values; None for kinds without scores."""
        return None

    def project(self, x: torch.Tensor, positions: torch.Tensor | None = None):
        """``x [B, N, C] -> (q [B, Hq, N, D], k, v [B, Hkv, N, D], s [B, Hkv, N] or None)``.

        ``positions``: int64 ``[N]`` or ``[B, N]``, the absolute positions at which RoPE rotates
        q and k (default ``arange(N)``; a decoder passes the positions of the new tokens)."""
        self.check_input(x)
        B, N, _ = x.shape
        q = self.q_proj(x).view(B, N, self.Hq, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, N, self.Hkv, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, N, self.Hkv, self.D).transpose(1, 2)
        s = self.scores(v)
        if self.rope:
            if positions is None:
                positions = torch.arange(N, device=x.device)
            if positions.shape not in ((N,), (B, N)):
                raise ValueError(f"positions must have shape [N={N}] or [B={B}, N={N}], "
                                 f"got {tuple(positions.shape)}")
            cos, sin = rope_angles(positions.reshape(-1), self.D, self.rope_base)
            if positions.dim() == 2:                     # per sequence: [B, 1, N, D]
                cos, sin = cos.view(B, 1, N, self.D), sin.view(B, 1, N, self.D)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v, s

    def output(self, o: torch.Tensor) -> torch.Tensor:
        """``o [B, Hq, N, D] -> y [B, N, C]``."""
        B, _, N, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(B, N, self.Hq * self.D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, C] -> y [B, N, C]``."""
        q, k, v, s = self.project(x)
        return self.output(self.core(q, k, v, s))

    # What the layer attends to (the explorer's view), for scores s [B, Hkv, N] (zeros for the
    # kinds without scores: only their shape is used).
    def keep(self, s: torch.Tensor) -> torch.Tensor:
        """bool ``[B, Hkv, N, N]``: query p keeps key j."""
        return kinds.kept(self.kind, s, self.window or s.shape[-1])

    def lifetimes(self, s: torch.Tensor) -> torch.Tensor:
        """int64 ``[B, Hkv, N]``: key j is kept by the positions ``j <= p < e_j``."""
        return kinds.lifetimes(self.kind, s, self.window or s.shape[-1])

    def probs(self, q: torch.Tensor, k: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """float32 ``[B, Hq, N, N]``: the attention weights."""
        return kinds.probs(self.kind, q, k, s, self.window or s.shape[-1])


class CausalAttention(ProjectedAttention):
    """MHA/GQA: causal softmax attention over every past key (SDPA, ``is_causal``)."""

    kind = "mha"

    def attend(self, q, k, v, s=None) -> torch.Tensor:
        k, v = expand_kv(k, self.Hq), expand_kv(v, self.Hq)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class SlidingWindowAttention(ProjectedAttention):
    """Causal sliding window: query p keeps keys ``p - w < j <= p`` (SDPA with a band mask)."""

    kind = "swa"

    def attend(self, q, k, v, s=None) -> torch.Tensor:
        k, v = expand_kv(k, self.Hq), expand_kv(v, self.Hq)
        N = q.shape[2]
        keep = kinds.kept(self.kind, q.new_zeros(1, 1, N), self.window)[0, 0]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


class DMAAttention(ProjectedAttention):
    """Multi-head (GQA) attention with Dynamic Mask Attention.

    Args:
        hidden_size: model width C; input and output are ``[B, N, C]``.
        num_heads: query heads Hq. num_kv_heads: KV heads Hkv (default Hq); Hq % Hkv == 0.
        head_dim: D (default C // Hq).
        window: w, keys kept per query.
        form: "exp" (paper) or "log" (official code) score form.
        causal, mode: as in ``naive_dma_attention``.
        rope: apply rotary embeddings to q and k (v, hence s, is never rotated).
        backend: "naive" (``naive_dma_attention``, any device), "sdpa" (``sdpa_dma_attention``:
            the same through PyTorch's fused attention, ~3x faster on a CPU; global mode falls
            back to naive) or "triton" (``dma_ref.kernels``).
    """

    kind = "dma"

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, window: int = 256, *, form: str = "exp",
                 causal: bool = True, mode: str = "row", rope: bool = True,
                 rope_base: float = 10000.0, backend: str = "naive"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if form not in ("exp", "log"):
            raise ValueError(f"form must be 'exp' or 'log', got {form!r}")
        check_window(window)
        check_mode(mode)
        check_flag(causal, "causal")
        super().__init__(hidden_size, num_heads, num_kv_heads, head_dim, window, rope=rope,
                         rope_base=rope_base)
        self.form, self.causal, self.mode, self.backend = form, causal, mode, backend
        Hkv, D = self.Hkv, self.D
        self.delta = nn.Parameter(torch.randn(Hkv * D, Hkv) * (Hkv * D) ** -0.5)
        self.A = nn.Parameter(torch.randn(Hkv) * 0.02)

    def scores(self, v: torch.Tensor) -> torch.Tensor:
        return dma_scores(v, self.delta, self.A, form=self.form)

    def attend(self, q, k, v, s) -> torch.Tensor:
        """The DMA core on projected tensors, through the chosen backend."""
        if self.backend == "triton":
            from ..kernels import dma_attention  # lazily: importing it defines Triton kernels
            return dma_attention(q, k, v, s, self.window, causal=self.causal, mode=self.mode)
        if self.backend == "sdpa" and self.mode == "row":
            return sdpa_dma_attention(q, k, v, s, self.window, causal=self.causal)
        return naive_dma_attention(q, k, v, s, self.window, causal=self.causal, mode=self.mode)
