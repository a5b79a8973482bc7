"""A small decoder-only language model whose attention is MHA, a sliding window, or DMA.

    h_0 = E[tokens]                                         token embedding, no position embedding
    x   = RMSNorm(h);  x = x + conv(x)                      optional short causal depthwise conv
    h   = h + Attn(x)                                       (RoPE on q and k inside Attn)
    h   = h + W_down( silu(W_gate RMSNorm(h)) * W_up RMSNorm(h) )     SwiGLU MLP (optional)
    logits = RMSNorm(h) E^T        (tied head; untied: a separate W_head)

The three attentions (``dma_ref.nn.attention``) share everything but the selection of keys:

* ``mha``: causal softmax attention over every past key (SDPA with ``is_causal``);
* ``swa``: causal sliding window, query p keeps keys ``p - w < j <= p`` (SDPA with a band mask);
* ``dma``: ``DMAAttention``, query p keeps the w best-scored past keys and adds the score as a
  bias; the only extra parameters are its Delta ``[Hkv*D, Hkv]`` and A ``[Hkv]``.

``model.attention_maps(x)`` returns every layer's q, k, v, s, mask and attention probabilities,
for the learned-mask explorer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import (
    CausalAttention,
    DMAAttention,
    ProjectedAttention,
    SlidingWindowAttention,
    backend_for,
)
from .kinds import check_kind
from .mla import MultiHeadLatentAttention
from .nsa import NativeSparseAttention


@dataclass
class ModelConfig:
    """Everything that defines the model (stored with every checkpoint)."""

    vocab_size: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None        # None: = n_heads (MHA); fewer: GQA
    attn: str = "dma"                    # "mha", "swa" or "dma"
    window: int = 16                     # w of swa and dma (ignored by mha)
    form: str = "log"                    # DMA score form: "log" (stable), or "exp" (the paper; can overflow in training)
    mlp_hidden: int | None = None        # SwiGLU hidden size (default 4 d_model * 2/3, rounded)
    mlp: bool = True                     # False: blocks without an MLP (attention only)
    conv_kernel: int = 0                 # > 0: a short causal depthwise conv before q, k, v
    tie_embeddings: bool = True
    backend: str = "auto"                # DMA backend: "naive", "sdpa", "triton", "auto" (triton on CUDA, else sdpa)

    def __post_init__(self) -> None:
        check_kind(self.attn)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.conv_kernel < 0:
            raise ValueError(f"conv_kernel must be >= 0 (0: no convolution), got {self.conv_kernel}")

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 16 * ((8 * self.d_model // 3 + 15) // 16)

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x^2) + eps) * g`` over the last dim."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class ShortConv(nn.Module):
    """A short causal depthwise convolution with a residual, ``y_t = x_t + sum_i w_i * x_{t-i}``
    (per channel, i = 0 .. kernel-1), as in Zoology's attention baselines: it lets a token see
    its left neighbour before attention, so that one attention layer can match a query key with
    the key *and* read the value next to it.

    ``forward(x [B, N, C], past [B, kernel-1, C] | None) -> y [B, N, C]``; ``past`` holds the
    inputs just before x (decoding), zeros when None (the sequence starts at x).
    """

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim, bias=False)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        B, _, C = x.shape
        if past is None:
            past = x.new_zeros(B, self.kernel - 1, C)
        if past.shape != (B, self.kernel - 1, C):
            raise ValueError(f"past must have shape [B={B}, kernel-1={self.kernel - 1}, C={C}], "
                             f"got {tuple(past.shape)}")
        xp = torch.cat([past, x], dim=1).transpose(1, 2)          # [B, C, kernel-1+N]
        return x + self.conv(xp).transpose(1, 2)


def make_attention(cfg: ModelConfig, device: torch.device | str | None = None) -> ProjectedAttention:
    """The attention layer ``cfg.attn`` asks for (DMA's backend: ``cfg.backend``, or with
    "auto" the one for ``device``)."""
    if cfg.attn == "dma":
        backend = backend_for(device) if cfg.backend == "auto" else cfg.backend
        return DMAAttention(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, window=cfg.window,
                            form=cfg.form, backend=backend)
    if cfg.attn in ("mla", "nsa"):        # sizes derived from d_model, heads and window
        layer = MultiHeadLatentAttention if cfg.attn == "mla" else NativeSparseAttention
        return layer(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, window=cfg.window)
    layer = SlidingWindowAttention if cfg.attn == "swa" else CausalAttention
    return layer(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, window=cfg.window)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        self.norm1 = RMSNorm(cfg.d_model)
        self.conv = ShortConv(cfg.d_model, cfg.conv_kernel) if cfg.conv_kernel else None
        self.attn = make_attention(cfg, device)
        self.norm2 = RMSNorm(cfg.d_model) if cfg.mlp else None
        self.mlp = SwiGLU(cfg.d_model, cfg.hidden) if cfg.mlp else None

    def forward(self, h: torch.Tensor, internals: list | None = None) -> torch.Tensor:
        x = self.norm1(h)
        if self.conv is not None:
            x = self.conv(x)
        q, k, v, s = self.attn.project(x)
        o = self.attn.core(q, k, v, s)
        if internals is not None:
            internals.append({"q": q, "k": k, "v": v, "s": s})
        h = h + self.attn.output(o)
        return h if self.mlp is None else h + self.mlp(self.norm2(h))


class TinyLM(nn.Module):
    """Token embedding, ``n_layers`` pre-norm blocks, final RMSNorm, LM head.

    ``forward(tokens int64 [B, N]) -> logits float32 [B, N, V]``.
    """

    def __init__(self, cfg: ModelConfig, device: torch.device | str | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList([Block(cfg, device) for _ in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.d_model)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if device is not None:
            self.to(device)

    def _init_weights(self) -> None:
        # Small normal init for every matrix (GPT-2 style); DMAAttention keeps its own Delta, A.
        for name, p in self.named_parameters():
            if p.dim() == 2 and not name.endswith("delta"):
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens: torch.Tensor, internals: list | None = None) -> torch.Tensor:
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h, internals)
        h = self.norm(h)
        return F.linear(h, self.embed.weight) if self.head is None else self.head(h)

    def generate(self, prompt: torch.Tensor, max_new_tokens: int, *, use_cache: bool = True,
                 temperature: float = 0.0, generator: torch.Generator | None = None,
                 prefill_chunk: int | None = None) -> torch.Tensor:
        """int64 ``[B, P] -> [B, P + max_new_tokens]``: greedy at temperature 0; with the
        decoding cache (DMA: at most w keys per layer and head, exact) unless ``use_cache`` is
        False. See ``dma_ref.nn.generate.generate``."""
        from .generate import generate
        return generate(self, prompt, max_new_tokens, use_cache=use_cache,
                        temperature=temperature, generator=generator, prefill_chunk=prefill_chunk)

    def num_params(self, exclude_dma: bool = False) -> int:
        """Parameter count; ``exclude_dma`` leaves out Delta and A (the only DMA extras)."""
        return sum(p.numel() for n, p in self.named_parameters()
                   if not (exclude_dma and n.endswith((".delta", ".A"))))

    @torch.no_grad()
    def attention_maps(self, tokens: torch.Tensor) -> dict:
        """Everything the explorer draws, per layer, for ``tokens int64 [B, N]``.

        Returns ``{"logits": [B, N, V], "layers": [...]}``; each layer is a dict with
        q ``[B, Hq, N, D]``, k, v ``[B, Hkv, N, D]``, s ``[B, Hkv, N]`` float32 (zeros for
        mha/swa, which have no scores), mask bool ``[B, Hkv, N, N]`` (query p keeps key j),
        probs float32 ``[B, Hq, N, N]`` (the attention weights), lifetimes int64 ``[B, Hkv, N]``
        (DMA ``e_j``; for swa ``min(j + w, N)``, for mha N).
        """
        internals: list = []
        logits = self(tokens, internals)
        layers = []
        for block, it in zip(self.blocks, internals):
            q, k, v, s = it["q"], it["k"], it["v"], it["s"]
            if s is None:                                     # mha, swa: no scores, no bias
                s = torch.zeros(k.shape[:3], device=k.device)
            s = s.float()
            layers.append({"q": q, "k": k, "v": v, "s": s, "mask": block.attn.keep(s),
                           "probs": block.attn.probs(q, k, s), "lifetimes": block.attn.lifetimes(s)})
        return {"logits": logits, "layers": layers}
