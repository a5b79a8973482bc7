"""Check every variant of the DMA path against float64 on a GPU, then time them beside cuDNN.

    python scripts/gpu_variants.py [--out DIR] [--quick]

B = 1, Hq = 8, Hkv = 2, D = 128, bf16 (the benchmark's configuration). Variants are module
switches: ``forward.LAZY_RESCALE`` (lazy rescaling in the forward), ``ranks.COUNT_RANKS_MAX``
(ranks by the counting kernel up to that K, else torch.sort + ranks_kernel) and
``dense_sdpa.DENSE_VIA_SDPA`` (the dense regime through fused SDPA).

1. Correctness: per variant, o, dq, dk, dv, ds against ``naive_dma_attention`` in float64 on
   fresh inputs (sparse w = 256 and dense w = N at N = 2048, and Q < K); each relative error must
   be at most 2x that of the naive path run in bf16. A failing variant is not timed.
2. Times (ms, median; L2 flushed; ``dma_ref.lab.bench.timing``): eager and CUDA-graph forward
   and forward + backward per variant at N = 4K, 16K, 128K (w = 1024) and in the dense regime,
   cuDNN dense causal in the same process; ``rank_keys`` by sort and by count; host time of an
   eager call (no sync). Everything goes to ``DIR/variants.json``; a table is printed last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import dma_ref
from dma_ref import naive_dma_attention
from dma_ref.lab.bench.timing import Timer, graphed
from dma_ref.numerics import rel_err

dma_ref.setup_device()
import dma_ref.kernels.dense_sdpa as dense_mod
import dma_ref.kernels.forward as forward_mod
import dma_ref.kernels.ranks as ranks_mod
from dma_ref.kernels import dma_attention, rank_keys

B, HQ, HKV, D = 1, 8, 2, 128
# name: (LAZY_RESCALE, COUNT_RANKS_MAX, DENSE_VIA_SDPA)
VARIANTS = {"base": (False, 0, False), "lazy": (True, 0, False),
            "count": (False, 1 << 30, False), "sdpa": (False, 0, True),
            "new": (True, None, True)}


@contextmanager
def variant(name: str):
    lazy, count_max, sdpa = VARIANTS[name]
    old = (forward_mod.LAZY_RESCALE, ranks_mod.COUNT_RANKS_MAX, dense_mod.DENSE_VIA_SDPA)
    forward_mod.LAZY_RESCALE = lazy
    ranks_mod.COUNT_RANKS_MAX = old[1] if count_max is None else count_max
    dense_mod.DENSE_VIA_SDPA = sdpa
    try:
        yield
    finally:
        forward_mod.LAZY_RESCALE, ranks_mod.COUNT_RANKS_MAX, dense_mod.DENSE_VIA_SDPA = old


def inputs(Q: int, K: int, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, do = (torch.randn(B, HQ, Q, D, device="cuda", generator=g).bfloat16() for _ in range(2))
    k, v = (torch.randn(B, HKV, K, D, device="cuda", generator=g).bfloat16() for _ in range(2))
    s = torch.randn(B, HKV, K, device="cuda", generator=g).bfloat16()
    return q, k, v, s, do


def grads(fn, q, k, v, s, do, w):
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v, s)]
    o = fn(*leaves, w)
    return [o.detach(), *torch.autograd.grad(o, leaves, do.to(o.dtype))]


REFS: dict = {}


def check(name: str, seed: int) -> list[str]:
    """Failures (empty: the variant passed) on sparse, list-free (2w >= K), dense and Q < K
    cases; the float64 and naive bf16 results are computed once per case."""
    bad = []
    for Q, K, w in ((2048, 2048, 256), (2048, 2048, 2048), (700, 2048, 512), (2048, 2048, 1500)):
        q, k, v, s, do = inputs(Q, K, seed + Q + w)
        if (Q, K, w) not in REFS:
            REFS[Q, K, w] = (grads(naive_dma_attention, *(t.double() for t in (q, k, v, s, do)),
                                   w), grads(naive_dma_attention, q, k, v, s, do, w))
        ref, low = REFS[Q, K, w]
        with variant(name):
            got = grads(dma_attention, q, k, v, s, do, w)
        for part, g_, l_, r_ in zip(("o", "dq", "dk", "dv", "ds"), got, low, ref):
            e_k, e_n = rel_err(g_, r_), rel_err(l_, r_)
            ok = bool(torch.isfinite(g_).all()) and e_k <= 2 * e_n
            print(f"check {name} Q={Q} K={K} w={w} {part}: {e_k:.2e} (naive bf16 {e_n:.2e})"
                  f"{'' if ok else '  FAIL'}", flush=True)
            if not ok:
                bad.append(f"Q={Q} K={K} w={w} {part}: {e_k:.2e} > 2 x {e_n:.2e}")
    return bad


def time_dma(name: str, N: int, w: int, timer: Timer) -> dict:
    q, k, v, s, do = inputs(N, N, 7)
    leaves = [t.requires_grad_(True) for t in (q, k, v, s)]
    with variant(name):
        def fwd():
            return dma_attention(*leaves, w)

        def fwdbwd():
            return torch.autograd.grad(dma_attention(*leaves, w), leaves, do)

        out = {"fwd": timer(fwd), "fwdbwd": timer(fwdbwd),
               "graph_fwd": timer(graphed(fwd)), "graph_fwdbwd": timer(graphed(fwdbwd))}
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            fwd()
        out["host_fwd"] = (time.perf_counter() - t0) / 50 * 1e3
        torch.cuda.synchronize()
    return out


def time_cudnn(N: int, timer: Timer) -> dict:
    q, k, v, _s, do = inputs(N, N, 7)
    k, v = (t.repeat_interleave(HQ // HKV, dim=1) for t in (k, v))
    leaves = [t.requires_grad_(True) for t in (q, k, v)]

    def fwd():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return F.scaled_dot_product_attention(*leaves, is_causal=True)

    def fwdbwd():
        return torch.autograd.grad(fwd(), leaves, do)

    return {"fwd": timer(fwd), "fwdbwd": timer(fwdbwd)}


def time_ranks(timer: Timer) -> dict:
    out = {}
    for K in (4096, 8192, 16384, 32768):
        s = torch.randn(B, HKV, K, device="cuda")
        for method in ("sort", "count"):
            out[f"{K}_{method}"] = timer(graphed(lambda m=method, x=s: rank_keys(x, method=m)))
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(100):
                rank_keys(s, method=method)
            out[f"{K}_{method}_host"] = (time.perf_counter() - t0) / 100 * 1e3
            torch.cuda.synchronize()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".")
    p.add_argument("--quick", action="store_true", help="N = 4K and 16K only")
    args = p.parse_args()
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "checks": {}, "times": {}, "ranks": {}}
    path = Path(args.out) / "variants.json"

    def save():
        path.write_text(json.dumps(res, indent=1))

    t_start = time.time()
    for name in VARIANTS:
        res["checks"][name] = check(name, seed=1234)
        save()
    passed = [n for n in VARIANTS if not res["checks"][n]]
    print(f"[{time.time() - t_start:.0f} s] passed: {passed}", flush=True)
    timer = Timer(rep_ms=60.0)
    res["ranks"] = time_ranks(timer)
    save()
    sizes = [4096, 16384] if args.quick else [4096, 16384, 131072]
    sparse = [n for n in ("base", "lazy", "count", "new") if n in passed]
    for N in sizes:
        res["times"][f"cudnn_{N}"] = time_cudnn(N, timer)
        for name in sparse:
            if name == "count" and N > 16384:
                continue
            res["times"][f"{name}_{N}_1024"] = time_dma(name, N, 1024, timer)
            print(f"[{time.time() - t_start:.0f} s] {name} N={N}: "
                  f"{res['times'][f'{name}_{N}_1024']}", flush=True)
            save()
    for N in (4096, 16384, 65536):
        if N not in sizes:
            res["times"][f"cudnn_{N}"] = time_cudnn(N, timer)
        for name in [n for n in ("base", "sdpa") if n in passed]:
            res["times"][f"{name}_{N}_dense"] = time_dma(name, N, N, timer)
            save()
    print(f"[{time.time() - t_start:.0f} s] done", flush=True)
    print("ranks (graph ms / host ms):", json.dumps(res["ranks"]))
    print("variant N w: fwd / fwdbwd eager, graph fwd / fwdbwd, host fwd (ms); cuDNN fwd / fwdbwd")
    for key, t in res["times"].items():
        print(key, " ".join(f"{k}={v:.3f}" for k, v in t.items()))
    return 0 if all(not v for v in res["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
