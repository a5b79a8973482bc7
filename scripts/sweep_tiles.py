"""Time the sparse forward and backward kernels on fixed tiles, beyond the autotuner's list.

    python scripts/sweep_tiles.py [N ...]          (STEPS=sweep bash scripts/gpu_session.sh)

B = 1, Hq = 8, Hkv = 2 (4 heads packed per program, 128 rows), D = 128, bf16, w = 1024, on a
prebuilt plan. Each tile is (keys per tile, warps, pipeline stages); ``FWD_TUNING`` /
``BWD_TUNING`` in kernels/autograd.py are the autotuner's candidates, and this sweep is how new
ones earn a place there. Eager ``triton.testing.do_bench`` medians (ms): at these sizes one launch
costs far more GPU time than host time. A tile that does not compile or fit prints its error.
"""

import sys

import dma_ref.kernels.autograd as ag
import torch
from dma_ref.kernels import build_plan
from triton.testing import do_bench

W, D, SCALE = 1024, 128, 128 ** -0.5
FWD_TILES = ((32, 4, 3), (32, 4, 4), (64, 4, 3), (64, 4, 2), (32, 8, 3), (64, 8, 3), (16, 4, 4))
BWD_TILES = ((64, 8, 1), (32, 8, 1), (32, 4, 1), (32, 8, 2), (64, 8, 2), (32, 4, 2), (16, 4, 2),
             (64, 4, 1))


def sweep(n: int) -> None:
    q = torch.randn(1, 8, n, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    s = torch.randn(1, 2, n, device="cuda")
    do = torch.randn_like(q)
    base = ag.KernelConfig(rows=128)
    GH, bq = ag._shape(base, 4, n)
    plan = build_plan(s, W, n, block_q=bq)
    ref = ag.KernelConfig(rows=128, block_n=32, num_warps=4, num_stages=3)
    _o, lse, o32 = ag.dma_forward(q, k, v, s, plan, SCALE, ref, GH, True)
    for phase, tiles in (("fwd", FWD_TILES), ("bwd", BWD_TILES)):
        for bn, warps, stages in tiles:
            cfg = ag.KernelConfig(rows=128, block_n=bn, num_warps=warps, num_stages=stages)
            if phase == "fwd":
                def fn(cfg=cfg):
                    return ag.dma_forward(q, k, v, s, plan, SCALE, cfg, GH, True)
            else:
                def fn(cfg=cfg):
                    return ag.dma_backward(do, q, k, v, s, o32, lse, plan, SCALE, cfg, GH, False,
                                           None)
            try:
                ms = f"{do_bench(fn):.3f}"
            except Exception as err:  # noqa: BLE001 (a tile that cannot run: say why, go on)
                ms = f"failed ({type(err).__name__}: {str(err)[:80]})"
            print(f"N={n} {phase} BN{bn}/w{warps}/s{stages}: {ms}", flush=True)


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [16384, 131072]:
        sweep(n)
