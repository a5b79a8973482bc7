#!/usr/bin/env bash
# The paper's MQAR grid (notebook 12, python -m dma_ref.lab.paper mqar) for more seeds, on a
# many-core machine's CPUs (e.g. the GPU host's 16 cores; the GPU is not used: these models are
# too small for it). One process per training run, one thread each.
#   SEEDS="1 2" bash scripts/paper_seeds.sh     -> figures/paper/seed1/mqar.json, seed2/...
#   T=540 JOBS=15 ...                           time limit per seed (s), runs at a time
# PYTHON picks the interpreter (default python3). With OUT set, the records go to $OUT/seedN/
# instead (a remote machine's results folder).
# Each record is saved after every finished run, so a run cut by T keeps what finished, and
# `--resume` on the same folder trains only what is missing (with OUT set, a record already in
# figures/paper/seedN/ is copied there first: commit a cut run's record, run again).
# The package need not be installed: it is staged as /tmp/pkg/dma_ref (kernels/ copied to
# dma_ref/kernels, as pyproject.toml maps them); tqdm is taken from build/pylib if missing.
set -euo pipefail
PY=${PYTHON:-python3}
REPO=$PWD
DEST=${OUT:-$REPO/figures/paper}
JOBS=${JOBS:-$(( $(nproc) - 1 ))}
mkdir -p /tmp/pkg
rm -rf /tmp/pkg/dma_ref && cp -r dma_ref /tmp/pkg/dma_ref && cp -r kernels /tmp/pkg/dma_ref/kernels
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1
if ! "$PY" -c "import tqdm" 2>/dev/null; then
  if [ ! -d "$REPO/build/pylib/tqdm" ]; then
    echo "tqdm is missing: pip install tqdm or put it in build/pylib" >&2
    exit 1
  fi
  export PYTHONPATH=/tmp/pkg:$REPO/build/pylib
fi
cd /tmp
echo "$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), jobs $JOBS"
for seed in ${SEEDS:-1}; do
  mkdir -p "$DEST/seed$seed"
  # On a remote machine, continue from the record the checkout already holds (--resume).
  if [ "$DEST" != "$REPO/figures/paper" ] && [ -f "$REPO/figures/paper/seed$seed/mqar.json" ] \
     && [ ! -f "$DEST/seed$seed/mqar.json" ]; then
    cp "$REPO/figures/paper/seed$seed/mqar.json" "$DEST/seed$seed/"
  fi
  timeout "${T:-540}" "$PY" -m dma_ref.lab.paper mqar --seed "$seed" --jobs "$JOBS" \
    --threads 1 --out "$DEST/seed$seed" --resume --no-progress --no-figures \
    || echo "seed $seed: stopped (exit $?)"
  [ -f "$DEST/seed$seed/mqar.json" ] || { echo "seed $seed: no run finished"; continue; }
  "$PY" - "$DEST/seed$seed/mqar.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
print("seed", r["seed"], {m: len(v) for m, v in r["results"].items()}, "wall", round(r["wall_seconds"]))
PY
done
