"""Compile the DMA kernels for the H200 (sm_90) on a machine without a GPU, and report resources.

    python scripts/compile_sm90.py [--d 128 64] [--dtype bf16] [--jobs 2] [--kinds fwd]
                                   [--lazy 0|1]

For every autotuning candidate of ``FWD_TUNING`` / ``BWD_TUNING`` (kernels/launch.py) and
every kernel variant the benchmark meets (sparse lists with the ``e`` test; dense ``w >= K``),
compiles ``dma_fwd_kernel`` / ``dma_bwd_kernel`` with Triton's own compiler for
``GPUTarget("cuda", 90, 32)`` and prints per variant: shared memory, registers and spill
bytes (from ``ptxas -v`` on the PTX), and whether the matrix products became ``wgmma``. A
candidate that fails to compile, spills, or falls back from wgmma shows here at no device
time; the GPU run then only has to time the survivors.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

ROWS, GH = 128, 4          # the benchmark's packing: Hq / Hkv = 4, BLOCK_Q = 32 (split 2: GH = 2)


def compile_one(kind: str, D: int, dtype: str, variant: str, cfg: tuple[int, ...], lazy: bool):
    import triton
    from dma_ref.kernels.backward import dma_bwd_kernel
    from dma_ref.kernels.forward import dma_fwd_kernel
    from dma_ref.kernels.launch import padded_head_dim
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    block_n, warps, stages, split = cfg
    gh = GH // split
    fn = dma_fwd_kernel if kind == "fwd" else dma_bwd_kernel
    elt = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}[dtype]
    ptrs = {"Qp": elt, "Kp": elt, "Vp": elt, "Sp": "*fp32", "Ep": "*i32", "IDX": "*i32",
            "START": "*i64", "CNT": "*i32", "Op": elt, "O32": "*fp32", "LSE": "*fp32",
            "DOp": elt, "DLSE": "*fp32", "DQ": elt, "DK": "*fp32", "DV": "*fp32", "DS": "*fp32"}
    consts = {"BLOCK_Q": ROWS // GH, "GH": gh, "BLOCK_N": block_n, "HEAD_D": D,
              "HEAD_DP": padded_head_dim(D), "CAUSAL": True, "DENSE": variant == "dense",
              "USE_E": variant == "sparse", "PREC": "ieee" if dtype == "fp32" else "tf32"}
    if kind == "fwd":
        consts.update(STORE_O32=True, LAZY=lazy)
    else:
        consts.update(DS_F32=dtype == "fp16", DETERMINISTIC=False, HAS_DLSE=False)
    sig = {n: ptrs.get(n, "constexpr" if n in consts
                       else "fp32" if n in ("qk_scale", "scale") else "i32") for n in fn.arg_names}
    # What Triton specialises at a real launch: 16-byte-aligned tensors, and sizes divisible by
    # 16 (N = 4096 ... 131072). Without these attributes the loads are not vectorised and the
    # register counts below are far too high.
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if sig[n].startswith("*") or n in ("n_q", "n_k", "n_qb")}
    src = ASTSource(fn, sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()},
                    attrs=attrs)
    t0 = time.time()
    try:
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": warps, "num_stages": stages})
    except Exception as e:                                   # noqa: BLE001 - reported, not hidden
        return kind, D, dtype, variant, cfg, None, f"{type(e).__name__}: {str(e)[:120]}"
    secs = time.time() - t0
    ptx = k.asm["ptx"]
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    out = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull],
                         check=False, capture_output=True, text=True).stderr
    os.unlink(f.name)
    regs = re.search(r"Used (\d+) registers", out)
    spill = re.search(r"(\d+) bytes spill stores", out)
    info = {"shared": k.metadata.shared, "regs": int(regs.group(1)) if regs else None,
            "spill": int(spill.group(1)) if spill else None,
            "wgmma": ptx.count("wgmma.mma_async"), "secs": round(secs, 1)}
    return kind, D, dtype, variant, cfg, info, ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=int, nargs="+", default=[128, 64])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--kinds", nargs="+", default=["fwd", "bwd"], choices=["fwd", "bwd"])
    p.add_argument("--lazy", type=int, choices=[0, 1], default=None,
                   help="the forward's lazy rescaling (default: forward.LAZY_RESCALE)")
    args = p.parse_args(argv)
    from dma_ref.kernels.forward import LAZY_RESCALE
    from dma_ref.kernels.launch import BWD_TUNING, FWD_TUNING

    lazy = LAZY_RESCALE if args.lazy is None else bool(args.lazy)
    jobs = [(kind, D, args.dtype, variant, cfg, lazy)
            for D in args.d for variant in ("sparse", "dense")
            for kind, cands in (("fwd", FWD_TUNING), ("bwd", BWD_TUNING)) for cfg in cands
            if kind in args.kinds]
    print("kernel D dtype variant (BLOCK_N, warps, stages): shared bytes, registers, spill bytes,"
          " wgmma count, compile s")
    bad = 0
    with ProcessPoolExecutor(args.jobs) as pool:
        for kind, D, dtype, variant, cfg, info, err in pool.map(compile_one, *zip(*jobs)):
            if info is None:
                print(f"{kind} D={D} {dtype} {variant} {cfg}: FAILED {err}")
                continue
            flag = " SPILLS" if info["spill"] else ""
            flag += " over 227 KB shared" if info["shared"] > 232448 else ""
            flag += " no wgmma" if not info["wgmma"] else ""
            bad += bool(flag)
            print(f"{kind} D={D} {dtype} {variant} {cfg}: shared {info['shared']}, regs "
                  f"{info['regs']}, spill {info['spill']}, wgmma {info['wgmma']}, "
                  f"{info['secs']} s{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
