"""Comparing methods fairly: equal parameter counts, and FLOPs per token.

Equal parameters: the methods differ in their attention's parameters (MLA's latent is smaller
than MHA's k and v projections; NSA adds gates and compression MLPs; DMA adds Delta and A), so
:func:`equal_params` gives each method the SwiGLU hidden size that brings its whole model
closest to MHA's parameter count (the MLP absorbs the difference; the attention is untouched).

FLOPs per token (:func:`flops_per_token`): the forward pass's multiply-adds x 2, averaged over
the positions of a sequence of N tokens: every linear layer once (NSA's compression MLPs once
per compressed block and KV head, i.e. divided by the stride), the tied LM head, the short
convolution, and the attention ``2 Hq (D_qk + D_v)`` per key read, with the number of keys each
position reads counted exactly (causal: t + 1; window: min(w, t + 1); NSA: its compressed
blocks, selected tokens and window). Training costs about 3x the forward.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from ...nn import ModelConfig, TinyLM, nsa_sizes


def params_of(cfg: ModelConfig) -> int:
    return TinyLM(cfg).num_params()


def equal_params(cfg: ModelConfig, attn: str) -> ModelConfig:
    """``cfg`` with ``attn`` and the MLP hidden size whose model has the parameter count
    closest to ``cfg``'s with MHA (``cfg.mlp`` must be on)."""
    if not cfg.mlp:
        raise ValueError("equal_params balances through the MLP: cfg.mlp must be True")
    target = params_of(replace(cfg, attn="mha"))
    base = replace(cfg, attn=attn, mlp_hidden=cfg.hidden)
    per_unit = 3 * cfg.d_model * cfg.n_layers                 # SwiGLU: gate, up, down
    hidden = cfg.hidden + round((target - params_of(base)) / per_unit)
    return replace(base, mlp_hidden=max(1, hidden))


def keys_read(attn: str, t: int, window: int) -> dict[str, int]:
    """How many keys position t reads, per branch (NSA: sizes from ``nsa_sizes(window)``)."""
    if attn in ("mha", "mla"):
        return {"causal": t + 1}
    if attn in ("swa", "dma"):
        return {"window": min(window, t + 1)}
    s = nsa_sizes(window)
    done = 0 if t < s.block - 1 else (t - s.block + 1) // s.stride + 1
    blocks = t // s.select_block + 1
    selected = t + 1 if blocks <= s.n_select else (s.n_select - 1) * s.select_block + (
        t % s.select_block + 1)
    return {"compressed": done, "selected": selected, "window": min(window, t + 1)}


def flops_per_token(cfg: ModelConfig, N: int) -> int:
    """Forward FLOPs per token of ``TinyLM(cfg)`` on sequences of N tokens (module docstring)."""
    model = TinyLM(cfg)
    attn = model.blocks[0].attn
    linear = 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            per = mod.in_features * mod.out_features
            if ".cmp_" in name:                      # once per compressed block and KV head
                per = per * attn.Hkv / nsa_sizes(cfg.window).stride
            linear += per
    head = cfg.d_model * cfg.vocab_size
    conv = cfg.conv_kernel * cfg.d_model
    d_qk = attn.D + getattr(attn, "d_R", 0)
    reads = sum(sum(keys_read(cfg.attn, t, cfg.window).values()) for t in range(N)) / N
    per_layer_attn = attn.Hq * (d_qk + attn.D) * reads
    total = linear + cfg.n_layers * (conv + per_layer_attn) + head
    return round(2 * total)


def selected_budget(window: int) -> int:
    """NSA's selected tokens per query once the sequence is long: ``n l'``."""
    s = nsa_sizes(window)
    return s.n_select * s.select_block


