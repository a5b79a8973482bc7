"""Time each step of the mask builder on a GPU (ms, median of ``triton.testing.do_bench``).

    python scripts/profile_builder.py [N ...]        (STEPS=profile bash scripts/gpu_session.sh)

Steps: the key sort, ``ranks_kernel``, the old torch ranks (for comparison), the rank table
(``rank_table_kernel``), the lifetimes kernel with 4 and 8 warps and rank blocks of 64 and 128,
the whole ``build_lifetimes``, the key lists, the whole ``build_plan``, and ``dma_attention``'s forward (the plan included) at B=1, Hq=8, Hkv=2, D=128;
then the plan, and the plan plus the forward kernel, replayed from a CUDA graph (no host work).
"""

import sys

import torch
import triton
from dma_ref.kernels import block_key_lists, build_lifetimes, build_plan, dma_attention
from dma_ref.kernels.autograd import FWD_CONFIG, dma_forward
from dma_ref.kernels.lifetimes import (
    lifetimes_kernel,
    rank_table_kernel,
    ranks_kernel,
    superblock_size,
)
from triton.testing import do_bench

from dma_ref.bench import graphed
from dma_ref.mask import key_order, key_ranks

W, BP = 1024, 128


def graph_ms(fn):
    """``fn`` captured once in a CUDA graph, then its replay timed: what the host overhead of
    the eager launches costs (the difference to the eager time). Returns the reason instead of
    a time when the capture fails (a host sync or an allocation the graph cannot hold)."""
    try:
        return do_bench(graphed(fn))
    except Exception as err:  # noqa: BLE001 - a failed capture is a result worth printing
        return f"capture failed: {type(err).__name__}: {str(err)[:100]}"


def profile(N: int) -> None:
    s = torch.randn(1, 2, N, device="cuda")
    t = {"torch order+ranks": do_bench(lambda: key_ranks(s, key_order(s)))}
    s2 = s.reshape(2, N)
    t["sort"] = do_bench(lambda: torch.sort(s2, dim=-1, stable=True))
    order_rev = torch.sort(s2, dim=-1, stable=True).indices                # ascending
    o_k, r_k = (torch.empty(2, N, dtype=torch.int32, device="cuda") for _ in range(2))
    t["ranks_kernel"] = do_bench(lambda: ranks_kernel[(triton.cdiv(N, 1024), 2)](
        order_rev, o_k, r_k, N, BLOCK=1024, num_warps=4))
    order = key_order(s).reshape(2, N)
    r32 = key_ranks(s, order.reshape(1, 2, N)).reshape(2, N).to(torch.int32).contiguous()
    o32 = order.to(torch.int32).contiguous()
    S = superblock_size(N, BP)
    n_s = -(-N // S)
    e = torch.empty(2, N, dtype=torch.int32, device="cuda")
    for BJ in (64, 128):
        n_rb = -(-N // BJ)
        H = torch.empty(2, n_s, n_rb, dtype=torch.int32, device="cuda")
        nrb = triton.next_power_of_2(n_rb)
        t[f"table_bj{BJ}"] = do_bench(lambda H=H, n_rb=n_rb, nrb=nrb, BJ=BJ: rank_table_kernel[
            (n_s, 2)](r32, H, N, n_rb, S=S, NRB=nrb, BJ=BJ, BP=BP, num_warps=4))
        for nw in (4, 8):
            t[f"kernel_bj{BJ}_w{nw}"] = do_bench(
                lambda H=H, n_rb=n_rb, BJ=BJ, nw=nw: lifetimes_kernel[(n_rb, 2)](
                    r32, o32, H, e, N, W, n_rb, n_s, S=S, NS=triton.next_power_of_2(n_s),
                    BJ=BJ, BP=BP, num_warps=nw))
    t["lifetimes"] = do_bench(lambda: build_lifetimes(s, W))
    e64 = build_lifetimes(s, W).reshape(2, N)
    t["lists"] = do_bench(lambda: block_key_lists(e64, N, 32, W))      # BQ of the forward, G = 4
    t["plan"] = do_bench(lambda: build_plan(s, W, N, block_q=32))
    q = torch.randn(1, 8, N, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, N, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    t["dma_fwd"] = do_bench(lambda: dma_attention(q, k, v, s, W))
    # The same work without the host: the plan, and the plan plus the forward kernel (without
    # dma_attention's value check, whose host sync cannot be captured).
    t["plan_graph"] = graph_ms(lambda: build_plan(s, W, N, block_q=32))
    s32, GH = s.float(), 4
    t["plan+fwd_graph"] = graph_ms(lambda: dma_forward(q, k, v, s32, build_plan(s, W, N, block_q=32),
                                                       128 ** -0.5, FWD_CONFIG, GH))
    print(N, " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}=[{v}]"
                      for k, v in t.items()), flush=True)


for n in [int(x) for x in sys.argv[1:]] or [16384, 131072]:
    profile(n)
