"""Hugging Face ``DogeForCausalLM`` (``transformers.models.doge``) computing its attention with
dma_ref: the Triton kernel on CUDA, the naive path on the CPU.

Doge's attention is DMA in row mode, exp form: ``s = exp(A * softplus(dt_proj(v)))`` from the
values of all KV heads of a token, the ``keep_window_size`` best keys of each causal query row
kept (``torch.topk`` over the row, masked keys at the dtype's minimum), ``s_j`` added to the
kept logits; ``keep_window_size >= key length`` disables the selection. ``use_dma(model)``
replaces each ``DogeAttention.forward`` (the dynamic mask is built inside that forward, so an
attention function of transformers' registry would receive a dense Q x K mask: too late) with
one that computes the scores once per new token and calls ``dma_attention``. Ties: dma_ref
breaks them by position (the later key wins); ``torch.topk`` leaves their order unspecified.

Decoding: with transformers' own cache (``generate()`` default) the new tokens attend over the
whole cache through the DMA core, as Doge does (exact, O(context) memory). With
``bounded_cache(model)`` (a transformers ``Cache`` whose layers hold a ``dma_ref.DMACache``:
pass it as ``past_key_values``) each layer keeps at most ``keep_window_size`` keys per KV head,
and each key's score is computed once; equal to the full cache (the cache module says why).

Limitation: no padding (an ``attention_mask`` with zeros is refused): batches of equal length.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from ..naive import naive_dma_attention
from ..nn.cache import DMACache


def import_transformers():
    """``transformers``, after making sure the bare name ``kernels`` is Hugging Face's
    ``kernels`` distribution (a dependency of transformers >= 5): run from this repository's
    root, the folder ``kernels/`` (our Triton kernels, installed as ``dma_ref.kernels``) would
    answer that import instead and break ``import transformers``."""
    if "transformers" not in sys.modules:
        found = importlib.util.find_spec("kernels")
        ours = Path(__file__).resolve().parents[2] / "kernels"
        if found is not None and found.origin and Path(found.origin).parent == ours:
            init = Path(str(importlib.metadata.distribution("kernels").locate_file(
                "kernels/__init__.py")))
            spec = importlib.util.spec_from_file_location(
                "kernels", init, submodule_search_locations=[str(init.parent)])
            module = importlib.util.module_from_spec(spec)
            sys.modules["kernels"] = module
            spec.loader.exec_module(module)
    import transformers
    return transformers


def dma_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, window: int,
             scale: float) -> torch.Tensor:
    """``o [B, Hq, Q, D]``: the Triton kernel on CUDA, the naive path elsewhere."""
    if q.is_cuda:
        from ..kernels import dma_attention
        return dma_attention(q, k, v, s, window, scale=scale)
    return naive_dma_attention(q, k, v, s, window, scale=scale)


def attention_forward(self, hidden_states: torch.Tensor, position_embeddings, attention_mask=None,
                      cache=None, **kwargs):
    """``DogeAttention.forward`` on dma_ref: hidden_states ``[B, C, hidden]`` -> ``(y, None)``."""
    from transformers.models.doge.modeling_doge import apply_rotary_pos_emb
    if cache is None:
        cache = kwargs.pop("past_key_values", None)
    B, C, _ = hidden_states.shape
    shape = (B, C, -1, self.head_dim)
    q = self.q_norm(self.q_proj(hidden_states).view(shape)).transpose(1, 2)
    k = self.k_norm(self.k_proj(hidden_states).view(shape)).transpose(1, 2)
    v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
    bounded = isinstance(cache, BoundedCache)
    if cache is not None and not bounded:
        k, v = cache.update(k, v, self.layer_idx)
    # One score per key and KV head, from the values of all KV heads (Doge's dt_proj); with the
    # bounded cache only the new tokens' (the cache keeps the scores of its keys).
    x = self.dt_proj(v.transpose(1, 2).reshape(B, v.shape[2], -1))
    s = torch.exp(self.A * F.softplus(x)).transpose(1, 2).to(torch.float32)  # [B, Hkv, K]
    if bounded:
        layer = cache.layers[self.layer_idx]
        pos = layer.cache.next_positions(torch.ones(B, C, dtype=torch.bool, device=q.device))
        core = partial(dma_core, window=self.keep_window_size, scale=self.scaling)
        o = layer.cache.attend(0, q, k, v, s, pos, core)
    else:
        o = dma_core(q, k, v, s, min(self.keep_window_size, k.shape[2]), self.scaling)
    y = self.o_proj(o.transpose(1, 2).reshape(B, C, -1))
    return y, None


def use_dma(model):
    """Make every ``DogeAttention`` of ``model`` (a ``DogeForCausalLM`` or ``DogeModel``)
    compute with dma_ref; returns the model."""
    n = 0
    for module in model.modules():
        if isinstance(module, DogeAttention):
            module.forward = types.MethodType(attention_forward, module)
            n += 1
    if n == 0:
        raise ValueError("model has no DogeAttention layer (expected a DogeForCausalLM)")
    return model


import_transformers()
from transformers.cache_utils import Cache, CacheLayerMixin  # (after the fix-up above)
from transformers.models.doge.modeling_doge import DogeAttention


class BoundedLayer(CacheLayerMixin):
    """One layer of ``bounded_cache``: a ``dma_ref.DMACache`` (which also counts the tokens seen,
    for positions and masks). Only the dma_ref attention of ``use_dma`` reads and fills it."""

    def __init__(self, window: int):
        super().__init__()
        self.window = window
        self.cache = DMACache(1, window)

    def lazy_initialization(self, key_states, value_states):
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        raise RuntimeError("the bounded cache needs dma_ref's attention: call use_dma(model)")

    def get_seq_length(self) -> int:
        seen = self.cache.seen
        return 0 if seen is None else int(seen.max())

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.cache = DMACache(1, self.window)


class BoundedCache(Cache):
    """A transformers ``Cache`` of ``BoundedLayer``s: at most ``keep_window_size`` keys per
    layer and KV head."""

    def kv_bytes(self) -> int:
        """Bytes of every tensor the layers hold (``DMACache.kv_bytes``)."""
        return sum(layer.cache.kv_bytes() for layer in self.layers)


def bounded_cache(model) -> BoundedCache:
    """The bounded cache for ``model`` (a ``DogeForCausalLM`` after ``use_dma``): pass it to
    ``model.generate(..., cache=bounded_cache(model))``."""
    windows = [m.keep_window_size for m in model.modules() if isinstance(m, DogeAttention)]
    if not windows:
        raise ValueError("model has no DogeAttention layer (expected a DogeForCausalLM)")
    return BoundedCache(layers=[BoundedLayer(w) for w in windows])
