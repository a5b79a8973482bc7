#!/usr/bin/env bash
# DMA's exp and log score forms on the MQAR recipe (TrainConfig defaults, fp32, Triton backend),
# one process per (form, seed), all at once on one GPU (each is launch-bound, the GPU is mostly
# idle), then merged into one record like python -m dma_ref.lab.train.forms writes:
#   SEEDS="0 1 2 3" bash scripts/gpu_forms.sh     -> $OUT/score_forms_gpu.json, forms_*.log
# Staged as in gpu_session.sh: the package copied to /tmp/pkg/dma_ref with kernels/ inside.
set -euo pipefail
REPO=$PWD
OUT=${OUT:-/tmp/out}
SEEDS=${SEEDS:-"0 1 2 3"}
mkdir -p "$OUT" /tmp/pkg
rm -rf /tmp/pkg/dma_ref && cp -r dma_ref /tmp/pkg/dma_ref && cp -r kernels /tmp/pkg/dma_ref/kernels
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/pkg OMP_NUM_THREADS=1
cd /tmp
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
for form in exp log; do
  for seed in $SEEDS; do
    timeout "${RUN_S:-480}" python3 -m dma_ref.lab.train.forms --device cuda --precision fp32 \
      --forms $form --seeds $seed --out "$OUT/forms_${form}_$seed.json" > "$OUT/forms_${form}_$seed.log" 2>&1 &
  done
done
wait || true
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
parts = [json.loads(p.read_text()) for p in sorted(out.glob("forms_*.json"))]
rec = {**parts[0], "runs": {k: v for p in parts for k, v in p["runs"].items()},
       "command": "SEEDS=... bash scripts/gpu_forms.sh (one python -m dma_ref.lab.train.forms "
                  "--device cuda --precision fp32 process per form and seed, run concurrently)",
       "wall_seconds": max(p["wall_seconds"] for p in parts)}
(out / "score_forms_gpu.json").write_text(json.dumps(rec, indent=1) + "\n")
for k, v in sorted(rec["runs"].items()):
    print(k, v["accuracy"], v["diverged_at"], v["seconds"])
PY
