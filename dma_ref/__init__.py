"""dma_ref: Dynamic Mask Attention (Shi et al., arXiv 2508.02124), the reference implementation.

The public API (DESIGN.md section 4)::

    dense_attention, dma_scores, dma_mask, key_lifetimes, naive_dma_attention, DMAAttention
    ModelConfig, TinyLM (with .generate), DMACache (decoding in O(w) memory)
    dma_ref.kernels.dma_attention          (Triton; import after setup_device())

Importing ``dma_ref`` does not import Triton, so ``setup_device()`` can still switch the Triton
interpreter on.
"""

from . import paths  # noqa: F401  (dma_ref.paths after a plain import dma_ref)
from .dense import dense_attention
from .device import describe_environment, setup_device
from .lifetimes import key_lifetimes
from .mask import dma_mask
from .naive import naive_dma_attention
from .nn import DMAAttention, DMACache, ModelConfig, TinyLM
from .scores import dma_scores

__all__ = [
    "DMAAttention",
    "DMACache",
    "ModelConfig",
    "TinyLM",
    "dense_attention",
    "describe_environment",
    "dma_mask",
    "dma_scores",
    "key_lifetimes",
    "naive_dma_attention",
    "setup_device",
]
__version__ = "0.1.0"
