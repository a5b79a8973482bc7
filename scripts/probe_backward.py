"""Where the sparse backward's time goes: the fp32 atomic adds of dK, dV, ds, or the tiles' work.

    python scripts/probe_backward.py [N ...]      (STEPS=probe bash scripts/gpu_session.sh)

B = 1, Hq = 8, Hkv = 2, D = 128, bf16, w = 1024, one fixed tile (the autotuner's 2026-12 choice
for the backward, 64 keys / 4 heads packed / 8 warps / 1 stage, and the forward's 32 / 4 / 4 / 3).
Times, replayed from CUDA graphs (ms, median of triton.testing.do_bench):

- ``fwd``: the forward kernel on a prebuilt plan;
- ``bwd_atomic``: the backward as shipped (fp32 atomic adds into zeroed dK, dV, ds);
- ``bwd_store``: the same kernel with each atomic add turned into a plain store to the same
  addresses (racy, wrong values: a timing probe only);
- ``bwd_no_write``: the same with the stores masked off by a condition the compiler cannot
  decide (``scale < 0``): all the dot products, none of the dK / dV / ds traffic;
- ``bwd_deterministic``: the partial buffers and the fixed-order reduction.

The variants are source copies of ``backward.py`` with the three ``tl.atomic_add`` lines
replaced, written to a temporary folder (alive while the script runs: Triton reads a kernel's
source when it compiles it) and imported from there as modules of ``dma_ref.kernels``; nothing
is written into the package. ``bwd_atomic - bwd_no_write`` bounds what the atomics cost.
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

import dma_ref.kernels.backward as bw
import torch
from dma_ref.kernels import build_plan
from dma_ref.kernels.forward import dma_forward
from dma_ref.kernels.launch import KernelConfig, tile_shape
from triton.testing import do_bench

from dma_ref.lab.bench.timing import graphed

VARIANTS = tempfile.TemporaryDirectory(prefix="dma_probe_bwd_")

W, D, SCALE = 1024, 128, 128 ** -0.5
FWD = KernelConfig(rows=128, block_n=32, num_warps=4, num_stages=3)
BWD = KernelConfig(rows=128, block_n=64, num_warps=8, num_stages=1)
ATOMICS = ('tl.atomic_add(DV + koffs, dv_t, mask=kmask, sem="relaxed")',
           'tl.atomic_add(DK + koffs, dk_t, mask=kmask, sem="relaxed")',
           'tl.atomic_add(DS + s_base + j, tl.sum(ds, 0), mask=col_ok, sem="relaxed")')
STORES = {"store": ("tl.store(DV + koffs, dv_t, mask=kmask)",
                    "tl.store(DK + koffs, dk_t, mask=kmask)",
                    "tl.store(DS + s_base + j, tl.sum(ds, 0), mask=col_ok)"),
          "no_write": ("tl.store(DV + koffs, dv_t, mask=kmask & (scale < 0))",
                       "tl.store(DK + koffs, dk_t, mask=kmask & (scale < 0))",
                       "tl.store(DS + s_base + j, tl.sum(ds, 0), mask=col_ok & (scale < 0))")}


def variant(name: str):
    """``dma_bwd_kernel`` of a source copy of backward.py with the atomics replaced."""
    src = Path(bw.__file__).read_text()
    for old, new in zip(ATOMICS, STORES[name]):
        assert src.count(old) == 1, old
        src = src.replace(old, new)
    path = Path(VARIANTS.name) / f"probe_bwd_{name}.py"
    path.write_text(src)
    # A module of dma_ref.kernels by name, so that backward.py's relative imports resolve.
    spec = importlib.util.spec_from_file_location(f"dma_ref.kernels.probe_bwd_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.dma_bwd_kernel


def probe(n: int) -> dict[str, float]:
    q = torch.randn(1, 8, n, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    s = torch.randn(1, 2, n, device="cuda")
    do = torch.randn_like(q)
    GH, bq = tile_shape(FWD, 4, n)
    plan = build_plan(s, W, n, block_q=bq)
    _o, lse, o32 = dma_forward(q, k, v, s, plan, SCALE, FWD, GH, True)[:3]
    out = {"fwd": do_bench(graphed(lambda: dma_forward(q, k, v, s, plan, SCALE, FWD, GH, True)))}

    def bwd(deterministic: bool = False):
        return lambda: bw.dma_backward(do, q, k, v, s, o32, lse, plan, SCALE, BWD, GH,
                                       deterministic, None)

    shipped = bw.dma_bwd_kernel
    out["bwd_atomic"] = do_bench(graphed(bwd()))
    for name in STORES:
        bw.dma_bwd_kernel = variant(name)
        try:
            out[f"bwd_{name}"] = do_bench(graphed(bwd()))
        finally:
            bw.dma_bwd_kernel = shipped
    out["bwd_deterministic"] = do_bench(graphed(bwd(True)))
    return out


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [16384, 131072]:
        print(f"N={n} w={W} D={D} bwd tile BN64/GH4/w8/s1: " + " ".join(
            f"{k}={t:.3f}" for k, t in probe(n).items()), flush=True)
