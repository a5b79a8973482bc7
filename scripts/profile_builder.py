"""Time each step of the mask builder on a GPU (ms, median of do_bench).

    PROFILE="16384 131072" bash scripts/gpu_session.sh
"""
import sys

import torch
import triton
from dma_ref.kernels import block_key_lists, build_lifetimes, build_plan
from dma_ref.kernels.lifetimes import lifetimes_kernel, superblock_size
from triton.testing import do_bench

from dma_ref.mask import key_order, key_ranks

w, BJ, BP = 1024, 64, 128
def profile(N: int) -> None:
    s = torch.randn(1, 2, N, device="cuda")
    t = {}
    order = key_order(s).reshape(2, N)
    ranks = key_ranks(s, order.reshape(1, 2, N)).reshape(2, N)
    S = superblock_size(N, BP)
    NS = triton.next_power_of_2(-(-N // S))
    n_rb = -(-N // BJ)

    def table():
        cell = (torch.arange(N, device="cuda") // BJ * NS)[None, :] + order // S
        hist = torch.zeros(2, n_rb * NS, dtype=torch.int32, device="cuda")
        hist.scatter_add_(1, cell, torch.ones_like(cell, dtype=torch.int32))
        hist = hist.view(2, n_rb, NS)
        return (torch.cumsum(hist, 1, dtype=torch.int32) - hist).contiguous()
    H = table()
    r32, o32 = ranks.to(torch.int32).contiguous(), order.to(torch.int32).contiguous()
    e = torch.empty(2, N, dtype=torch.int32, device="cuda")
    for nw in (4, 8):
        t[f"kernel_w{nw}"] = do_bench(lambda nw=nw: lifetimes_kernel[(n_rb, 2)](
            r32, o32, H, e, N, w, n_rb, S=S, NS=NS, BJ=BJ, BP=BP, num_warps=nw))
    t["table"] = do_bench(table)
    t["order+ranks"] = do_bench(lambda: key_ranks(s, key_order(s)))
    t["lifetimes"] = do_bench(lambda: build_lifetimes(s, w))
    t["plan"] = do_bench(lambda: build_plan(s, w, N))
    e64 = build_lifetimes(s, w).reshape(2, N)
    t["lists"] = do_bench(lambda: block_key_lists(e64, N, 64, w))
    print(N, " ".join(f"{k}={v:.3f}" for k, v in t.items()), flush=True)


for n in [int(x) for x in sys.argv[1:]] or [16384, 131072]:
    profile(n)
