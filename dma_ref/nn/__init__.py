"""Attention layers and the tiny language model built from them.

* ``attention``: one projection base; ``CausalAttention`` (MHA), ``SlidingWindowAttention``
  (SWA) and ``DMAAttention``, each with ``keep``, ``lifetimes``, ``probs`` and a ``core``.
* ``mla``: ``MultiHeadLatentAttention`` (DeepSeek-V2); ``nsa``: ``NativeSparseAttention``
  (compressed, selected and sliding branches, gated).
* ``kinds``: the rule of the kinds (kept keys, lifetimes, weights) for any window.
* ``model``: ``ModelConfig``, ``TinyLM``; ``checkpoint``: save and load, ``CHECKPOINT``.
* ``cache``: ``DMACache`` (exact, w keys per head), ``WindowCache``; ``generate``: decoding.
"""

from .attention import CausalAttention, DMAAttention, SlidingWindowAttention, backend_for
from .cache import DMACache, WindowCache
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .kinds import ATTENTIONS
from .mla import MultiHeadLatentAttention
from .model import ModelConfig, TinyLM, make_attention
from .nsa import NativeSparseAttention, NSASizes, nsa_sizes

__all__ = [
    "ATTENTIONS",
    "CHECKPOINT",
    "CausalAttention",
    "DMAAttention",
    "DMACache",
    "ModelConfig",
    "MultiHeadLatentAttention",
    "NSASizes",
    "NativeSparseAttention",
    "SlidingWindowAttention",
    "TinyLM",
    "WindowCache",
    "backend_for",
    "load_checkpoint",
    "make_attention",
    "nsa_sizes",
    "save_checkpoint",
]
