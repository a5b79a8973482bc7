"""Triton kernels for Dynamic Mask Attention, importable as ``dma_ref.kernels``.

Import after ``dma_ref.setup_device()`` (on a CPU it must switch the Triton interpreter on
before any kernel is defined).

* ``dma_attention(q, k, v, s, window, *, causal=True, scale=None, mode="row",
  return_lse=False, fwd_config=None, bwd_config=None, deterministic=False,
  check_values=None)``: op.py (custom operators, autograd), forward.py and backward.py (the
  kernels and their launchers), tiles.py (their shared tile code), launch.py (tile shapes,
  autotuning), reduce.py (the deterministic backward's reduction). Any head dim that is a
  multiple of 8 up to 256; the backward adds dk, dv, ds atomically unless ``deterministic=True``.
  No host synchronisation on CUDA (CUDA graphs can capture it), two custom operators for
  ``torch.compile`` (no graph break), tiles autotuned on CUDA (``FWD_TUNING``, ``BWD_TUNING``).
* ``graphed_attention(q, k, v, s, window, **options)``: the same call with its forward and
  backward captured in CUDA graphs (graphs.py), for training steps of fixed shapes.
* The mask builder, timed separately by the benchmark: ``build_thresholds(s, w)`` (theta_p,
  the w-th best rank so far) and ``build_lifetimes(s, w)`` (the exact ``e_j`` of DESIGN.md 3.5,
  ranks.py), ``global_lifetimes``, ``block_key_lists(rank_keys(s), theta, Q, BQ, w)``
  (per-query-block key lists, plan.py) and ``build_plan`` (everything one call needs).
"""

from .graphs import graphed_attention
from .launch import BWD_CONFIG, FWD_CONFIG, HEAD_DIMS, KernelConfig
from .op import dma_attention
from .plan import KeyPlan, block_key_lists, build_plan, topw_key_lists
from .ranks import build_lifetimes, build_thresholds, global_lifetimes, rank_keys

__all__ = [
    "BWD_CONFIG",
    "FWD_CONFIG",
    "HEAD_DIMS",
    "KernelConfig",
    "KeyPlan",
    "block_key_lists",
    "build_lifetimes",
    "build_plan",
    "build_thresholds",
    "dma_attention",
    "global_lifetimes",
    "graphed_attention",
    "rank_keys",
    "topw_key_lists",
]
