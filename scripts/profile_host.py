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
