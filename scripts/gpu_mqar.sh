#!/usr/bin/env bash
# The GPU MQAR comparison (issue 9): MHA, SWA and DMA (Triton backend) trained one after the
# other with the GPU preset of dma_ref/lab/train/config.py (GPU_PRESET, bf16 autocast), in one
# call.
#   bash scripts/gpu_mqar.sh               -> figures/mqar/results_gpu.json, curves_gpu.json,
#                                             comparison_gpu.png, train_gpu.log
#   NPROC=2 bash scripts/gpu_mqar.sh       data-parallel over 2 GPUs of the host (torchrun):
#                                             results_gpu_ddp2.json, curves_gpu_ddp2.json, ...
#   bash scripts/gpu_mqar.sh --steps 300   extra flags go to python -m dma_ref.lab.train
# Run it from the repository root. The package need not be installed: as in gpu_session.sh it is
# staged as /tmp/pkg/dma_ref with kernels/ copied to dma_ref/kernels (the mapping pyproject.toml
# gives the installed package), and python runs from /tmp so that the checkout's dma_ref/, which
# has no kernels/, cannot shadow it. With OUT set, the results and the log are copied to $OUT.
set -euo pipefail
REPO=$PWD
FIG=${MQAR_DIR:-$REPO/figures/mqar}
NPROC=${NPROC:-1}
NAME=results_gpu.json
[ "$NPROC" -gt 1 ] && NAME=results_gpu_ddp$NPROC.json
SUFFIX=${NAME#results}; SUFFIX=${SUFFIX%.json}
mkdir -p "$FIG" /tmp/pkg
rm -rf /tmp/pkg/dma_ref && cp -r dma_ref /tmp/pkg/dma_ref && cp -r kernels /tmp/pkg/dma_ref/kernels
# NVLink multicast stays off (dma_ref/lab/distributed.py sets the same before NCCL starts).
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/pkg NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 \
       NVSHMEM_DISABLE_NVLS=1
cd /tmp
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
if [ "$NPROC" -gt 1 ]; then
  LAUNCH=(python3 -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m dma_ref.lab.train)
else
  LAUNCH=(python3 -m dma_ref.lab.train)
fi
LOG=$FIG/train$SUFFIX.log
START=$(date +%s)
status=0
"${LAUNCH[@]}" --compare --preset gpu --device cuda --out "$FIG" --results-name "$NAME" "$@" \
  2>&1 | tee "$LOG" || status=$?
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  for f in "$NAME" "curves$SUFFIX.json" "comparison$SUFFIX.png" "train$SUFFIX.log"; do
    [ -f "$FIG/$f" ] && cp "$FIG/$f" "$OUT/"
  done
fi
# The final summary line (accuracy, wall seconds, tokens/s, attention share per model).
python3 - "$FIG/$NAME" "$FIG/curves$SUFFIX.json" "$status" "$START" <<'PY'
import json, sys
from pathlib import Path
from dma_ref.lab.train import format_comparison
res, cur, status, start = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
if not res.exists() or res.stat().st_mtime < start - 1:     # an older record is no result
    sys.exit(f"MQAR GPU: this run wrote no {res.name} (exit status {status})")
r, c = json.loads(res.read_text()), json.loads(cur.read_text())
print(format_comparison(r, c))
def share(x):
    return "n/a" if x is None else f"{x:.0%}"
print(f"MQAR GPU {res.name}: " + ", ".join(
    f"{a} acc {acc:.3f} in {c['seconds'][a]:.0f} s ({c['steps_run'][a]} steps, "
    f"{c['tokens_per_s'][a]:.3g} tok/s, attention {share(c['attention_share'][a])})"
    for a, acc in r["accuracy"].items()) + f"; {c.get('gpu')}, {c.get('precision')}, exit {status}")
PY
exit "$status"
