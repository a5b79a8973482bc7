"""Host (Python) time of one ``dma_attention`` call on a GPU, and where it goes.

    python scripts/profile_host.py [N] [w]        (STEPS=host bash scripts/gpu_session.sh)

B = 1, Hq = 8, Hkv = 2, D = 128, bf16, inputs requiring grad (a training forward). After a
warm-up (autotuning), times 200 calls on the host clock without synchronising (what the CPU
spends issuing the work), then the same with a synchronize after each call (host + GPU), and
prints the 15 most expensive functions of cProfile over 200 calls.
"""

import cProfile
import pstats
import sys
import time

import torch
from dma_ref.kernels import dma_attention

N = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
W = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
q = torch.randn(1, 8, N, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
k, v = (torch.randn(1, 2, N, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        for _ in range(2))
s = torch.randn(1, 2, N, device="cuda", requires_grad=True)
for _ in range(3):
    dma_attention(q, k, v, s, W)
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(200):
    dma_attention(q, k, v, s, W)
host = (time.perf_counter() - t0) / 200 * 1e3
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(50):
    dma_attention(q, k, v, s, W)
    torch.cuda.synchronize()
both = (time.perf_counter() - t0) / 50 * 1e3
print(f"N={N} w={W}: host time per call {host:.3f} ms (no sync); call + sync {both:.3f} ms")
prof = cProfile.Profile()
prof.enable()
for _ in range(200):
    dma_attention(q, k, v, s, W)
prof.disable()
torch.cuda.synchronize()
pstats.Stats(prof).sort_stats("tottime").print_stats(15)

# Where the forward's GPU time goes (CUDA-graph replays, ms): the plan, the kernel with s in
# bf16 and in fp32, the whole forward (figures/bench/PERF_NOTES.md has what it found).
from dma_ref.kernels import FWD_CONFIG, build_plan
from dma_ref.kernels.forward import dma_forward
from dma_ref.kernels.launch import TUNERS, fit_config, tile_shape
from dma_ref.kernels.op import forward_impl
from triton.testing import do_bench

from dma_ref.lab.bench.timing import graphed


def graph_ms(fn) -> float:
    """Median ms of ``fn`` replayed from a CUDA graph (no host work)."""
    return do_bench(graphed(fn))


def split(n: int) -> dict:
    qn = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16)
    kn, vn = (torch.randn(1, 2, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    sb = torch.randn(1, 2, n, device="cuda").to(torch.bfloat16)
    cfg = fit_config(FWD_CONFIG, 128, torch.bfloat16, backward=False)
    GH, bq = tile_shape(cfg, 4, n)
    plan = build_plan(sb, W, n, block_q=bq)
    def tile():
        c = TUNERS["fwd"].best_config
        return f"BN{c.kwargs['BLOCK_N']}/GH{c.kwargs['GH']}/w{c.num_warps}/s{c.num_stages}"

    out = {"plan": graph_ms(lambda: build_plan(sb, W, n, block_q=bq))}
    out["kernel_s_bf16"] = graph_ms(lambda: dma_forward(qn, kn, vn, sb, plan, 0.088, cfg, GH, True))
    out["tile_bf16"] = tile()
    s32 = sb.float()
    out["kernel_s_fp32"] = graph_ms(lambda: dma_forward(qn, kn, vn, s32, plan, 0.088, cfg, GH,
                                                        True))
    out["tile_fp32"] = tile()
    return {**out,
            "fwd_impl": graph_ms(lambda: forward_impl(qn, kn, vn, sb, W, True, 0.088, "row",
                                                      [cfg.rows, 0, 4, 3, 8], [128, 0, 8, 1, 8],
                                                      False, True)),
            "dma_attention_nograd": graph_ms(lambda: dma_attention(qn, kn, vn, sb, W))}


for n in (N, 131072):
    print(n, " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in split(n).items()), flush=True)
