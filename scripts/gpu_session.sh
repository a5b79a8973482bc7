#!/usr/bin/env bash
# One device call (at most 10 minutes): the GPU tests, then the benchmark. Logs go to $OUT.
#   bash scripts/gpu_session.sh            tests (TESTS_S), builder profile, bench (BENCH_S)
#   STEPS="graphs bench" bash scripts/gpu_session.sh  only some steps: tests (= graphs builder
#                                                   kernels), profile, probe, sweep, host, bench
#   BENCH_ARGS="--n 16384 --window 1024 --d 128"   extra arguments for python -m dma_ref.lab.bench
# The package is staged as /tmp/pkg/dma_ref (with kernels/ as dma_ref/kernels, as the editable
# install maps it) and every step runs from /tmp, so the checkout's dma_ref/ cannot shadow it.
# The benchmark resumes from figures/bench/anchors_2026-11-28.json (the slow O(N^2) anchors of
# runs 2-3, whose code has not changed) and measures DMA, cuDNN and FA2 anew: $OUT/h200.json
# (RESUME=figures/bench/h200.json continues a partial run instead).
set -u
REPO=$PWD
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-"tests profile bench"}
mkdir -p "$OUT" /tmp/pkg
rm -rf /tmp/pkg/dma_ref && cp -r dma_ref /tmp/pkg/dma_ref && cp -r kernels /tmp/pkg/dma_ref/kernels
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1
cd /tmp
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  nproc; } 2>&1 | tee "$OUT/gpu.txt"
T0=$(date +%s)
since() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
PYT="python3 -m pytest -q -p no:cacheprovider -rA -s"
has() { [[ " $STEPS " == *" $1 "* || " $STEPS " == *" tests "* && " graphs builder kernels " == *" $1 "* ]]; }
# Never run on a GPU before: CUDA graphs, inductor, every tuning candidate, the head dims.
if has graphs; then
  since "graph and compile tests" | tee -a "$OUT/tests.log"
  timeout "${GRAPH_S:-200}" $PYT "$REPO/tests/gpu/test_graphs_gpu.py" >> "$OUT/tests.log" 2>&1
fi
if has builder; then
  since "builder tests" | tee -a "$OUT/tests.log"
  timeout "${BUILDER_S:-45}" $PYT "$REPO/tests/gpu/test_builder_gpu.py" >> "$OUT/tests.log" 2>&1
fi
if has kernels; then
  since "kernel tests (bf16 first)" | tee -a "$OUT/tests.log"
  if [ -n "${KERNEL_K:-}" ]; then           # e.g. KERNEL_K="bf16 and -96-" (pytest -k)
    timeout "${KERNEL_S:-150}" $PYT "$REPO/tests/gpu/test_kernels_gpu.py" -k "$KERNEL_K" >> "$OUT/tests.log" 2>&1
  else
    timeout "${KERNEL_S:-150}" bash -c "$PYT \"$REPO/tests/gpu/test_kernels_gpu.py\" -k 'bf16 or not low_precision'; $PYT \"$REPO/tests/gpu/test_kernels_gpu.py\" -k fp16" >> "$OUT/tests.log" 2>&1
  fi
fi
[ -f "$OUT/tests.log" ] && grep -E "^(FAILED|ERROR)|passed|failed|error|^\[" "$OUT/tests.log" | tail -25
if has profile; then
  since "builder profile"
  timeout "${PROFILE_S:-60}" python3 "$REPO/scripts/profile_builder.py" ${PROFILE_N:-16384 131072} 2>&1 | tee "$OUT/profile_builder.txt"
fi
if has probe; then
  since "backward probe"
  timeout "${PROBE_S:-120}" python3 "$REPO/scripts/probe_backward.py" ${PROBE_N:-16384 131072} 2>&1 | tee "$OUT/probe_backward.txt"
fi
if has sweep; then
  since "tile sweep"
  timeout "${SWEEP_S:-240}" python3 "$REPO/scripts/sweep_tiles.py" ${SWEEP_N:-16384 131072} 2>&1 | tee "$OUT/sweep_tiles.txt"
fi
if has host; then
  since "host profile"
  timeout "${HOST_S:-60}" python3 "$REPO/scripts/profile_host.py" 16384 1024 > "$OUT/profile_host.txt" 2>&1; head -40 "$OUT/profile_host.txt"; tail -3 "$OUT/profile_host.txt"
fi
if has bench; then
  since "benchmark"
  cp "$REPO/${RESUME:-figures/bench/anchors_2026-11-28.json}" "$OUT/h200.json"
  timeout "${BENCH_S:-420}" python3 -m dma_ref.lab.bench --methods ${BENCH_METHODS:-dma_triton sdpa_cudnn sdpa_flash} \
    --resume "$OUT/h200.json" \
    --out "$OUT/h200.json" --budget-s "${BUDGET_S:-380}" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
  tail -40 "$OUT/bench.log"
fi
since "done"
