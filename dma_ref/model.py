"""A small decoder-only language model whose attention is MHA, a sliding window, or DMA.

    h_0 = E[tokens]                                         token embedding, no position embedding
    h   = h + Attn(RMSNorm(h))                              (RoPE on q and k inside Attn)
    h   = h + W_down( silu(W_gate RMSNorm(h)) * W_up RMSNorm(h) )     SwiGLU MLP
    logits = RMSNorm(h) E^T        (tied head; untied: a separate W_head)

The three attentions share everything but the selection of keys:

* ``mha``: causal softmax attention over every past key (SDPA with ``is_causal``);
* ``swa``: causal sliding window, query p keeps keys ``p - w < j <= p`` (SDPA with a band mask);
* ``dma``: ``dma_ref.DMAAttention``, query p keeps the w best-scored past keys and adds the
  score as a bias; the only extra parameters are its Delta ``[Hkv*D, Hkv]`` and A ``[Hkv]``.

``model.attention_maps(x)`` returns every layer's q, k, v, s, mask and attention probabilities,
for the learned-mask explorer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .dense import causal_mask, expand_kv
from .lifetimes import key_lifetimes
from .mask import dma_mask, sliding_window_lifetimes, sliding_window_mask
from .module import DMAAttention
from .rope import apply_rope, rope_angles

ATTENTIONS = ("mha", "swa", "dma")
# The trained DMA model shipped with the package (notebook 09); made by ``dma_ref.train --compare``.
CHECKPOINT = Path(__file__).resolve().parent / "data" / "mqar_dma.pt"


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
    form: str = "exp"                    # DMA score form, "exp" (paper) or "log"
    mlp_hidden: int | None = None        # SwiGLU hidden size (default 4 d_model * 2/3, rounded)
    tie_embeddings: bool = True
    backend: str = "auto"                # DMA backend: "naive", "triton", "auto" (triton on CUDA)

    def __post_init__(self) -> None:
        if self.attn not in ATTENTIONS:
            raise ValueError(f"attn must be one of {ATTENTIONS}, got {self.attn!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

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


class DenseAttention(nn.Module):
    """MHA/GQA with RoPE, causal (``swa=False``) or sliding-window causal (``swa=True``).

    Same projections and names as ``DMAAttention`` (q_proj, k_proj, v_proj, o_proj), so the
    three models differ only in the attention itself.
    """

    def __init__(self, cfg: ModelConfig, swa: bool):
        super().__init__()
        Hq = cfg.n_heads
        Hkv = cfg.n_kv_heads or Hq
        D = cfg.d_model // Hq
        self.Hq, self.Hkv, self.D, self.window, self.swa = Hq, Hkv, D, cfg.window, swa
        self.q_proj = nn.Linear(cfg.d_model, Hq * D, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, Hkv * D, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, Hkv * D, bias=False)
        self.o_proj = nn.Linear(Hq * D, cfg.d_model, bias=False)

    def project(self, x: torch.Tensor):
        """``x [B, N, C] -> (q [B, Hq, N, D], k, v [B, Hkv, N, D], None)`` (no scores)."""
        B, N, _ = x.shape
        q = self.q_proj(x).view(B, N, self.Hq, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, N, self.Hkv, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, N, self.Hkv, self.D).transpose(1, 2)
        cos, sin = rope_angles(torch.arange(N, device=x.device), self.D)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, None

    def keep(self, N: int, device=None) -> torch.Tensor:
        """bool ``[N, N]``, the keys each query attends to."""
        return sliding_window_mask(N, self.window, device) if self.swa else causal_mask(N, N, device)

    def attend(self, q, k, v, s=None) -> torch.Tensor:
        k, v = expand_kv(k, self.Hq), expand_kv(v, self.Hq)
        if self.swa:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.keep(q.shape[2], q.device))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, _ = self.project(x)
        o = self.attend(q, k, v)
        B, _, N, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(B, N, self.Hq * self.D))


def make_attention(cfg: ModelConfig, device: torch.device | str | None = None) -> nn.Module:
    """The attention layer ``cfg.attn`` asks for (DMA: naive backend on CPU, Triton on CUDA)."""
    if cfg.attn == "dma":
        backend = cfg.backend
        if backend == "auto":
            backend = "triton" if torch.device(device or "cpu").type == "cuda" else "naive"
        return DMAAttention(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, window=cfg.window,
                            form=cfg.form, backend=backend)
    return DenseAttention(cfg, swa=cfg.attn == "swa")


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        self.norm1 = RMSNorm(cfg.d_model)
        self.attn = make_attention(cfg, device)
        self.norm2 = RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg.d_model, cfg.hidden)

    def forward(self, h: torch.Tensor, internals: list | None = None) -> torch.Tensor:
        x = self.norm1(h)
        q, k, v, s = self.attn.project(x)
        o = self.attn.attend(q, k, v, s)
        if internals is not None:
            internals.append({"q": q, "k": k, "v": v, "s": s})
        B, _, N, _ = o.shape
        h = h + self.attn.o_proj(o.transpose(1, 2).reshape(B, N, -1))
        return h + self.mlp(self.norm2(h))


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
        B, N = tokens.shape
        layers = []
        for block, it in zip(self.blocks, internals):
            q, k, v, s = it["q"], it["k"], it["v"], it["s"]
            Hq, Hkv, D = q.shape[1], k.shape[1], q.shape[-1]
            if self.cfg.attn == "dma":
                mask = dma_mask(s, block.attn.window)                            # [B, Hkv, N, N]
                e = key_lifetimes(s.float().cpu(), block.attn.window).to(tokens.device)
                bias = expand_kv(s.float(), Hq)[:, :, None, :]
            else:
                mask = block.attn.keep(N, tokens.device).expand(B, Hkv, N, N)
                w_e = self.cfg.window if self.cfg.attn == "swa" else N         # MHA: never evicted
                e = sliding_window_lifetimes(N, w_e, tokens.device).expand(B, Hkv, N)
                s = torch.zeros(B, Hkv, N, device=tokens.device)
                bias = 0.0
            logit = (q.float() @ expand_kv(k, Hq).float().transpose(-1, -2)) * D ** -0.5 + bias
            probs = torch.softmax(logit.masked_fill(~expand_kv(mask, Hq), float("-inf")), dim=-1)
            layers.append({"q": q, "k": k, "v": v, "s": s.float(), "mask": mask,
                           "probs": probs, "lifetimes": e})
        return {"logits": logits, "layers": layers}


def save_checkpoint(model: TinyLM, path, extra: dict | None = None) -> None:
    """``torch.save({"config", "state_dict", **extra})`` (float32 CPU tensors)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": model.cfg.to_dict(), "state_dict": state, **(extra or {})}, path)


def load_checkpoint(path, device: torch.device | str | None = None) -> tuple[TinyLM, dict]:
    """``(model in eval mode, the checkpoint dict)``; the DMA backend follows the device."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ModelConfig(**{**ckpt["config"], "backend": "auto"})
    model = TinyLM(cfg)
    model.load_state_dict(ckpt["state_dict"])
    if device is not None:
        model = model.to(device)
        for block in model.blocks:
            if isinstance(block.attn, DMAAttention):
                block.attn.backend = "triton" if torch.device(device).type == "cuda" else "naive"
    return model.eval(), ckpt
