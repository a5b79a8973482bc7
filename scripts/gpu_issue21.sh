#!/usr/bin/env bash
# One device call for issue 21: the variants checked against float64 and timed beside cuDNN
# (scripts/gpu_variants.py), the builder and CUDA-graph GPU tests, then the D = 128 benchmark
# grid for dma_triton and cuDNN (the other records kept from figures/bench/h200.json). Logs and
# records go to $OUT. Staged like scripts/gpu_session.sh (package in /tmp/pkg, run from /tmp).
set -u
REPO=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/pkg
rm -rf /tmp/pkg/dma_ref && cp -r dma_ref /tmp/pkg/dma_ref && cp -r kernels /tmp/pkg/dma_ref/kernels
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1
cd /tmp
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$(date +%s)
since() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
since variants
timeout "${VARIANTS_S:-240}" python3 "$REPO/scripts/gpu_variants.py" --out "$OUT" > "$OUT/variants.log" 2>&1
ok=$?
tail -32 "$OUT/variants.log"
since "tests (variants rc=$ok)"
PYT="python3 -m pytest -q -p no:cacheprovider -rA"
timeout 50 $PYT "$REPO/tests/gpu/test_builder_gpu.py" > "$OUT/tests.log" 2>&1
timeout 70 $PYT "$REPO/tests/gpu/test_graphs_gpu.py" -k "graphed or cuda_graph" >> "$OUT/tests.log" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -8
if [ "$ok" = 0 ] && [ "${BENCH:-1}" = 1 ]; then
  since bench
  python3 - "$REPO/figures/bench/h200.json" "$OUT/h200.json" <<'PY'
import json, sys
keep = [r for r in json.load(open(sys.argv[1]))
        if not (r["D"] == 128 and r["method"] in ("dma_triton", "sdpa_cudnn"))]
json.dump(keep, open(sys.argv[2], "w"), indent=1)
PY
  timeout "${BENCH_S:-230}" python3 -m dma_ref.lab.bench --d 128 --methods dma_triton sdpa_cudnn \
    --resume "$OUT/h200.json" --out "$OUT/h200.json" --budget-s "${BUDGET_S:-200}" > "$OUT/bench.log" 2>&1
  tail -20 "$OUT/bench.log"
fi
since done
