"""Time the sparse forward and backward kernels on fixed tiles, beyond the autotuner's list.

    python scripts/sweep_tiles.py [N ...]          (STEPS=sweep bash scripts/gpu_session.sh)

B = 1, Hq = 8, Hkv = 2 (the 4 heads of a group packed per program), D = 128, bf16, w = 1024, on a
prebuilt plan. Each tile is (rows = 4 x BLOCK_Q, keys per tile, warps, pipeline stages);
``FWD_TUNING`` / ``BWD_TUNING`` in kernels/launch.py are the autotuner's candidates, and this
sweep is how new ones earn a place there. Eager ``triton.testing.do_bench`` medians (ms): at
these sizes one launch costs far more GPU time than host time. A tile that does not compile or
fit prints its error.
"""

import sys
from functools import partial

import torch
from dma_ref.kernels import build_plan
from dma_ref.kernels.backward import dma_backward
from dma_ref.kernels.forward import dma_forward
from dma_ref.kernels.launch import KernelConfig, tile_shape
from triton.testing import do_bench

W, D, SCALE = 1024, 128, 128 ** -0.5
# (rows, keys per tile, warps, stages); rows = 4 heads x BLOCK_Q positions.
FWD_TILES = ((128, 32, 4, 3), (128, 64, 4, 3), (128, 32, 4, 4), (64, 32, 4, 3), (256, 32, 8, 2))
BWD_TILES = ((128, 64, 8, 1), (128, 32, 8, 2), (128, 64, 8, 2), (64, 64, 4, 1), (64, 32, 4, 2))


def sweep(n: int) -> None:
    q = torch.randn(1, 8, n, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    s = torch.randn(1, 2, n, device="cuda")
    do = torch.randn_like(q)
    plans = {}
    for rows in (64, 128, 256):
        GH, bq = tile_shape(KernelConfig(rows=rows), 4, n)
        plans[rows] = GH, build_plan(s, W, n, block_q=bq)
    ref = KernelConfig(rows=128, block_n=32, num_warps=4, num_stages=3)
    _o, lse, o32 = dma_forward(q, k, v, s, plans[128][1], SCALE, ref, plans[128][0], True)
    for phase, tiles in (("fwd", FWD_TILES), ("bwd", BWD_TILES)):
        for rows, bn, warps, stages in tiles:
            GH, plan = plans[rows]
            cfg = KernelConfig(rows=rows, block_n=bn, num_warps=warps, num_stages=stages)
            args = (plan, SCALE, cfg, GH)
            if phase == "fwd":
                fn = partial(dma_forward, q, k, v, s, *args, True)
            else:
                fn = partial(dma_backward, do, q, k, v, s, o32, lse, *args, False, None)
            try:
                ms = f"{do_bench(fn):.3f}"
            except Exception as err:  # noqa: BLE001 (a tile that cannot run: say why, go on)
                ms = f"failed ({type(err).__name__}: {str(err)[:80]})"
            print(f"N={n} {phase} rows{rows}/BN{bn}/w{warps}/s{stages}: {ms}", flush=True)


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [16384, 131072]:
        sweep(n)
