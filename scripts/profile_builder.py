"""Time each step of the mask builder on a GPU (ms, median of ``triton.testing.do_bench``).

    python scripts/profile_builder.py [N ...]        (STEPS=profile bash scripts/gpu_session.sh)

Steps (B = 1, Hkv = 2, w = 1024 and 256, bf16 scores as in the benchmark): the key sort,
``rank_keys`` (sort + ``ranks_kernel``), ``thresholds_kernel``, ``lifetimes_kernel``, the key
lists for the forward's query blocks (BQ = 32), the whole ``build_plan`` eagerly and replayed
from a CUDA graph (no host work: the difference is launch overhead).
"""

import sys

import torch
from dma_ref.kernels import block_key_lists, build_plan, rank_keys
from dma_ref.kernels.ranks import lifetimes_from_thresholds, thresholds_unchecked
from triton.testing import do_bench

from dma_ref.lab.bench.timing import graphed


def profile(N: int, W: int) -> None:
    s = torch.randn(1, 2, N, device="cuda").to(torch.bfloat16)
    ranks = rank_keys(s)
    theta = thresholds_unchecked(ranks, W)
    t = {"sort": do_bench(lambda: torch.sort(s.reshape(2, N), dim=-1, stable=True)),
         "rank_keys": do_bench(lambda: rank_keys(s)),
         "thresholds": do_bench(lambda: thresholds_unchecked(ranks, W)),
         "lifetimes": do_bench(lambda: lifetimes_from_thresholds(ranks.r, theta)),
         "lists": do_bench(lambda: block_key_lists(ranks, theta, N, 32, W)),
         "plan": do_bench(lambda: build_plan(s, W, N, block_q=32)),
         "plan_graph": do_bench(graphed(lambda: build_plan(s, W, N, block_q=32)))}
    print(f"N={N} w={W} " + " ".join(f"{k}={v:.4f}" for k, v in t.items()), flush=True)


for n in [int(x) for x in sys.argv[1:]] or [16384, 131072]:
    for w in (1024, 256):
        profile(n, w)
