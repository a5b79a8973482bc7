"""Check and time a few block configs of the DMA kernels on a GPU, next to SDPA cuDNN.

    python -m dma_ref.kernels.tune [--n 4096 16384 65536] [--out DIR]

B=1, Hq=8, Hkv=2, D=128, bf16, causal, row mode, w=1024 (DESIGN.md section 6). For every N it
times (median of ``triton.testing.do_bench``, ms): the mask construction (``build_lifetimes``
and the whole ``build_plan``), the forward kernel alone for each forward config, the forward
+ backward through ``dma_attention`` for each backward config (mask construction included),
and SDPA cuDNN dense causal. Each config's outputs are checked against the default config's
(relative error printed). Prints a table and writes ``tune.json`` to ``--out`` (default
``$OUT``, else the current folder).

Last measured (H200, torch 2.11.0+cu130, triton 3.6.0, 2026-11-28, kernels at the Triton mask
builder; ``--quick``; ms, median; log in ``figures/bench/session_2026-11-28b/``):

| N | mask: lifetimes / whole plan | fwd kernel | fwd incl. mask | bwd kernel | fwd+bwd incl. mask | cuDNN fwd / fwd+bwd |
|---|---|---|---|---|---|---|
| 4096 | 0.39 / 0.90 | 0.091 | 1.88 | 0.29 | 2.70 | 0.096 / 0.376 |
| 16384 | 0.81 / 1.57 | 0.337 | 2.16 | 1.09 | 3.50 | 0.965 / 3.568 |
| 65536 | 0.94 / 1.75 | 1.300 | 3.47 | 4.16 | 7.86 | 14.65 / 54.69 |
| 131072 | 1.57 / 2.39 | 2.540 | 5.26 | 8.25 | 14.04 | 62.10 / 226.3 |

The previous, torch-op builder measured 1.54 / 1.78 / 3.78 ms (whole plan) at 4K / 16K / 64K.
Best configs of those tried earlier: forward rows 128 (4 heads x 32 positions), BLOCK_N 32,
4 warps, 3 stages; backward rows 128, BLOCK_N 64, 8 warps, 1 stage. The kernels alone beat
cuDNN 2.9x (fwd) at 16K and 24x at 128K; the mask construction and the Python around it still
dominate below 64K (``scripts/profile_builder.py`` splits it into its steps).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import triton
from triton.testing import do_bench

from .autograd import (
    BWD_CONFIG,
    BWD_TUNING,
    FWD_CONFIG,
    FWD_TUNING,
    KernelConfig,
    _replan,
    _shape,
    dma_attention,
    dma_backward,
    dma_forward,
)
from .blocks import build_plan
from .lifetimes import build_lifetimes

# The autotuned default first, then every autotuning candidate forced (G = 4 query heads per KV
# head here: split 2 packs 2 heads per program, 64 rows, with the same 32-position blocks).
FWD_CANDIDATES = [FWD_CONFIG] + [
    KernelConfig(rows=128 // sp, block_n=n, num_warps=w, num_stages=st, max_heads=4 // sp)
    for n, w, st, sp in FWD_TUNING]
BWD_CANDIDATES = [BWD_CONFIG] + [
    KernelConfig(rows=128 // sp, block_n=n, num_warps=w, num_stages=st, max_heads=4 // sp)
    for n, w, st, sp in BWD_TUNING]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def inputs(N: int, B=1, Hq=8, Hkv=2, D=128, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, Hq, N, D, device="cuda", generator=g).to(dtype)
    k = torch.randn(B, Hkv, N, D, device="cuda", generator=g).to(dtype)
    v = torch.randn(B, Hkv, N, D, device="cuda", generator=g).to(dtype)
    x = torch.randn(B, Hkv, N, device="cuda", generator=g)
    s = torch.exp(torch.nn.functional.softplus(x)).to(dtype)       # bf16 scores: many ties
    do = torch.randn(B, Hq, N, D, device="cuda", generator=g).to(dtype)
    return q, k, v, s, do


def cfg_name(c: KernelConfig) -> str:
    if c.block_n is None:
        return f"rows{c.rows}/autotuned"
    return f"rows{c.rows}/bn{c.block_n}/w{c.num_warps}/s{c.num_stages}"


def bench_n(N: int, w: int, fwd_cands, bwd_cands) -> dict:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v, s, do = inputs(N)
    G = q.shape[1] // k.shape[1]
    res: dict = {"N": N, "w": w, "fwd": {}, "fwdbwd": {}, "check": {}}
    res["build_lifetimes_ms"] = do_bench(lambda: build_lifetimes(s, w))
    GH, bq = _shape(FWD_CONFIG, G, N)
    res["build_plan_ms"] = do_bench(lambda: build_plan(s, w, N, block_q=bq))
    plan = build_plan(s, w, N, block_q=bq)
    res["list_entries"] = int(plan.count.sum())
    res["union_mean"] = float(plan.count.float().mean()) + bq
    scale = q.shape[-1] ** -0.5
    o_ref = None
    for c in fwd_cands:
        GH, bq_c = _shape(c, G, N)
        plan_c = build_plan(s, w, N, block_q=bq_c)
        try:
            o, _, _ = dma_forward(q, k, v, s, plan_c, scale, c, GH)
            if o_ref is None:
                o_ref = o
            res["check"]["fwd " + cfg_name(c)] = rel(o, o_ref)
            res["fwd"][cfg_name(c)] = do_bench(
                lambda c=c, plan_c=plan_c, GH=GH: dma_forward(q, k, v, s, plan_c, scale, c, GH))
        except Exception as err:  # noqa: BLE001 - e.g. out of shared memory: report, go on
            res["fwd"][cfg_name(c)] = f"failed: {type(err).__name__}: {str(err)[:120]}"
    res["fwd_with_mask_ms"] = do_bench(lambda: dma_attention(q, k, v, s, w))
    GH, _ = _shape(FWD_CONFIG, G, N)
    _, lse, o32 = dma_forward(q, k, v, s, plan, scale, FWD_CONFIG, GH, keep_fp32=True)
    GHb, bqb = _shape(BWD_CONFIG, G, N)
    plan_b = _replan(plan, N, bqb, s, "row")
    res["bwd_kernel_ms"] = do_bench(
        lambda: dma_backward(do, q, k, v, s, o32, lse, plan_b, scale, BWD_CONFIG, GHb))
    leaves = [t.requires_grad_(True) for t in (q, k, v, s)]
    g_ref = None
    for c in bwd_cands:
        def step(c=c):
            o = dma_attention(*leaves, w, bwd_config=c)
            return torch.autograd.grad(o, leaves, do)
        try:
            grads = step()
            if g_ref is None:
                g_ref = grads
            res["check"]["bwd " + cfg_name(c)] = max(rel(a, b) for a, b in zip(grads, g_ref))
            res["fwdbwd"][cfg_name(c)] = do_bench(step)
        except Exception as err:  # noqa: BLE001 - report the failing config, go on
            res["fwdbwd"][cfg_name(c)] = f"failed: {type(err).__name__}: {str(err)[:120]}"
    for t in leaves:
        t.requires_grad_(False)
    kr, vr = (t.repeat_interleave(G, dim=1) for t in (k, v))
    qs, ks, vs = (t.detach().clone().requires_grad_(True) for t in (q, kr, vr))
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        res["sdpa_cudnn_fwd_ms"] = do_bench(lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=True))

        def sdpa_step():
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
            return torch.autograd.grad(o, (qs, ks, vs), do)
        res["sdpa_cudnn_fwdbwd_ms"] = do_bench(sdpa_step)
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--w", type=int, default=1024)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true", help="only the default configs")
    args = ap.parse_args(argv)
    fwd_c = FWD_CANDIDATES[:1] if args.quick else FWD_CANDIDATES
    bwd_c = BWD_CANDIDATES[:1] if args.quick else BWD_CANDIDATES
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "triton": triton.__version__, "config": "B=1 Hq=8 Hkv=2 D=128 bf16 causal row",
           "runs": []}
    for N in args.n:
        t0 = time.time()
        r = bench_n(N, args.w, fwd_c, bwd_c)
        r["wall_s"] = time.time() - t0
        out["runs"].append(r)
        print(f"\nN={N} w={args.w}  (wall {r['wall_s']:.0f} s)  union/block mean {r['union_mean']:.0f}")
        print(f"  mask: build_lifetimes {r['build_lifetimes_ms']:.3f} ms, build_plan "
              f"{r['build_plan_ms']:.3f} ms")
        print(f"  SDPA cuDNN causal: fwd {r['sdpa_cudnn_fwd_ms']:.3f} ms, fwd+bwd "
              f"{r['sdpa_cudnn_fwdbwd_ms']:.3f} ms")
        print(f"  dma_attention fwd incl. mask: {r['fwd_with_mask_ms']:.3f} ms; bwd kernel alone "
              f"(default config) {r['bwd_kernel_ms']:.3f} ms")
        for name, ms in r["fwd"].items():
            chk = r["check"].get("fwd " + name, float("nan"))
            print(f"  fwd kernel {name:24s} {ms if isinstance(ms, str) else f'{ms:.3f} ms'}  "
                  f"(rel vs default {chk:.1e})")
        for name, ms in r["fwdbwd"].items():
            chk = r["check"].get("bwd " + name, float("nan"))
            print(f"  fwd+bwd (bwd {name:24s}) {ms if isinstance(ms, str) else f'{ms:.3f} ms'}  "
                  f"(rel vs default {chk:.1e})")
        with open(os.path.join(args.out, "tune.json"), "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
