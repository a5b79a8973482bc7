#!/usr/bin/env bash
# One device call: the compiled mask builder's exactness tests, the kernel timing table next to
# SDPA cuDNN (kernels/tune.py), then the GPU kernel tests. Logs and tune.json go to $OUT.
#   bash scripts/gpu_session.sh        (BUILDER_S, TUNE_S, KERNEL_S: per-step time limits)
# The package is staged as /tmp/pkg/dma_ref (with kernels/ as dma_ref/kernels, as the editable
# install maps it) and every step runs from /tmp, so the checkout's dma_ref/ cannot shadow it.
set -u
REPO=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/pkg
rm -rf /tmp/pkg/dma_ref && cp -r dma_ref /tmp/pkg/dma_ref && cp -r kernels /tmp/pkg/dma_ref/kernels
export PYTHONPATH=/tmp/pkg
cd /tmp
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
[ -n "${PROFILE:-}" ] && { python3 "$REPO/scripts/profile_builder.py" $PROFILE; exit; }
timeout "${BUILDER_S:-45}" python3 -m pytest -q -p no:cacheprovider "$REPO/tests/gpu/test_builder_gpu.py" 2>&1 | tail -12 | tee "$OUT/builder_tests.log"
timeout "${TUNE_S:-75}" python3 -m dma_ref.kernels.tune --quick --n ${TUNE_N:-4096 16384 65536 131072} --out "$OUT" > "$OUT/tune.log" 2>&1
grep -E "^N=|mask:|cuDNN|incl. mask|fwd kernel|fwd\+bwd" "$OUT/tune.log"
# The tests never run on a GPU yet first (deterministic backward, lse gradient), then the rest.
timeout "${KERNEL_S:-150}" bash -c "python3 -m pytest -q -p no:cacheprovider -rA -s \"$REPO/tests/gpu/test_kernels_gpu.py\" -k 'not low_precision_vs'; python3 -m pytest -q -p no:cacheprovider -rA -s \"$REPO/tests/gpu/test_kernels_gpu.py\" -k low_precision_vs" > "$OUT/kernel_tests.log" 2>&1
grep -E "passed|failed|FAILED" "$OUT/kernel_tests.log" | tail -12
