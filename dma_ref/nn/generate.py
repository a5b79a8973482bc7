"""Text generation with the tiny model: the cached forward and the sampling loop.

``forward_cached(model, tokens, cache)`` runs a chunk of new tokens through ``TinyLM`` with a
decoding cache (``dma_ref.nn.cache``): each block does what ``Block.forward`` does, but RoPE
rotates at the tokens' absolute positions, the short convolution reads its last inputs from the
cache, and attention sees only the cached keys plus the chunk. For DMA the cache holds at most
w keys per layer and KV head and the result equals the full recomputation exactly (the cache
module says why); for MHA it holds everything, for SWA the last w - 1 keys.

``generate(model, prompt, max_new_tokens)`` prefills the prompt (in chunks of ``prefill_chunk``
tokens, default all at once) and decodes one token per step; ``use_cache=False`` recomputes the
whole sequence every step instead (the reference the cache must match token for token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache import KVCache, make_cache

CACHED_KINDS = ("mha", "swa", "dma")     # the kinds with a decoding cache; others recompute


def new_cache(model: torch.nn.Module) -> KVCache:
    """An empty cache for ``model`` (a ``TinyLM``): DMA's bounded one, or a sliding / full one."""
    cfg = model.cfg
    if cfg.attn not in CACHED_KINDS:
        raise ValueError(f"no decoding cache for attn={cfg.attn!r}; kinds with one: {CACHED_KINDS}")
    for block in model.blocks:
        if cfg.attn == "dma" and (block.attn.mode != "row" or not block.attn.causal):
            raise ValueError("decoding with a cache needs causal row-mode DMA (global mode "
                             "selects over future keys)")
    windows = [block.attn.window for block in model.blocks]     # the layers' own w
    return make_cache(cfg.attn, cfg.n_layers, windows if cfg.attn == "dma" else cfg.window)


def forward_cached(model: torch.nn.Module, tokens: torch.Tensor, cache: KVCache,
                   valid: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``[B, C, V]`` for a chunk of new tokens int64 ``[B, C]`` that follow what
    ``cache`` has seen; updates the cache. valid bool ``[B, C]`` (default all True): False
    marks left-padding of sequences shorter than the others (position -1, ignored by attention
    and the convolution; its logits are meaningless)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.int64:
        raise ValueError(f"tokens must be an int64 tensor [B, C], got "
                         f"{getattr(tokens, 'dtype', type(tokens).__name__)} "
                         f"{tuple(getattr(tokens, 'shape', ()))}")
    if valid is None:
        valid = torch.ones_like(tokens, dtype=torch.bool)
    if valid.shape != tokens.shape:
        raise ValueError(f"valid must have the shape of tokens {tuple(tokens.shape)}, "
                         f"got {tuple(valid.shape)}")
    pos = cache.next_positions(valid)
    h = model.embed(tokens)
    for i, block in enumerate(model.blocks):
        x = block.norm1(h)
        if block.conv is not None:
            x = x * valid[..., None]                 # padding reads as the zeros before a start
            n = block.conv.kernel - 1
            past = cache.conv[i]
            if past is None:
                past = x.new_zeros(x.shape[0], n, x.shape[-1])
            cache.conv[i] = torch.cat([past, x], dim=1)[:, x.shape[1]:]      # last n inputs
            x = block.conv(x, past)
        q, k, v, s = block.attn.project(x, positions=pos)
        o = cache.attend(i, q, k, v, s, pos, block.attn.attend)
        h = h + block.attn.output(o)
        if block.mlp is not None:
            h = h + block.mlp(block.norm2(h))
    h = model.norm(h)
    return F.linear(h, model.embed.weight) if model.head is None else model.head(h)


def next_token(logits: torch.Tensor, temperature: float,
               generator: torch.Generator | None) -> torch.Tensor:
    """int64 ``[B]`` from logits ``[B, V]``: argmax at temperature 0, else a sample of
    ``softmax(logits / temperature)``."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int, *,
             use_cache: bool = True, temperature: float = 0.0,
             generator: torch.Generator | None = None,
             prefill_chunk: int | None = None) -> torch.Tensor:
    """int64 ``[B, P + max_new_tokens]``: the prompt int64 ``[B, P]`` (P >= 1) and the tokens
    generated after it (greedy at temperature 0, sampled with ``generator`` otherwise).

    ``use_cache``: decode with the model's cache (``new_cache``), one token per step after a
    prefill in chunks of ``prefill_chunk`` tokens; False recomputes every step from scratch.
    Both give the same tokens (equal logits up to float rounding). Kinds without a cache
    (``CACHED_KINDS`` lists those with one) always recompute.
    """
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.dtype != torch.int64:
        raise ValueError(f"prompt must be an int64 tensor [B, P], got "
                         f"{getattr(prompt, 'dtype', type(prompt).__name__)} "
                         f"{tuple(getattr(prompt, 'shape', ()))}")
    if prompt.shape[1] < 1:
        raise ValueError("prompt must hold at least one token per sequence (P >= 1)")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if prefill_chunk is not None and (not isinstance(prefill_chunk, int) or prefill_chunk < 1):
        raise ValueError(f"prefill_chunk must be an int >= 1 or None, got {prefill_chunk!r}")
    tokens = prompt
    if max_new_tokens == 0:
        return tokens
    if not use_cache or model.cfg.attn not in CACHED_KINDS:
        for _ in range(max_new_tokens):
            nxt = next_token(model(tokens)[:, -1], temperature, generator)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        return tokens
    cache = new_cache(model)
    for chunk in prompt.split(prefill_chunk or prompt.shape[1], dim=1):
        logits = forward_cached(model, chunk, cache)
    for step in range(max_new_tokens):
        nxt = next_token(logits[:, -1], temperature, generator)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if step + 1 < max_new_tokens:
            logits = forward_cached(model, nxt[:, None], cache)
    return tokens
