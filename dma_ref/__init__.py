"""dma_ref: Dynamic Mask Attention (Shi et al., arXiv 2508.02124), the reference implementation.

The public API (DESIGN.md section 4)::

    dense_attention, dma_scores, dma_mask, key_lifetimes, naive_dma_attention, DMAAttention
    dma_ref.kernels.dma_attention          (Triton; import after setup_device())

Importing ``dma_ref`` does not import Triton, so ``setup_device()`` can still switch the Triton
interpreter on.
"""

from .dense import dense_attention
from . import paths
from .device import describe_environment, setup_device
from .lifetimes import key_lifetimes
from .mask import dma_mask
from .module import DMAAttention
from .naive import naive_dma_attention
from .scores import dma_scores

__all__ = [
    "dense_attention", "dma_scores", "dma_mask", "key_lifetimes", "naive_dma_attention",
    "DMAAttention", "setup_device", "describe_environment",
]
__version__ = "0.1.0"
