"""Attention layers and the tiny language model built from them.

* ``attention``: one projection base; ``CausalAttention`` (MHA), ``SlidingWindowAttention``
  (SWA) and ``DMAAttention``, each with ``keep``, ``lifetimes``, ``probs`` and a ``core``.
* ``kinds``: the rule of the three kinds (kept keys, lifetimes, weights) for any window.
* ``model``: ``ModelConfig``, ``TinyLM``; ``checkpoint``: save and load, ``CHECKPOINT``.
"""

from .attention import CausalAttention, DMAAttention, SlidingWindowAttention, backend_for
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .kinds import ATTENTIONS
from .model import ModelConfig, TinyLM, make_attention

__all__ = [
    "ATTENTIONS",
    "CHECKPOINT",
    "CausalAttention",
    "DMAAttention",
    "ModelConfig",
    "SlidingWindowAttention",
    "TinyLM",
    "backend_for",
    "load_checkpoint",
    "make_attention",
    "save_checkpoint",
]
