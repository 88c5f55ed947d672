#!/usr/bin/env bash
# Issue 15: whole training steps and update-only cases, the OpenMP build against the old pool's,
# alternating in one hold of the exclusive timing lock (benchmarks/cpu/2026-12-05-openmp-train-step.md).
#   NEW: a package dir with this tree's python/gradfuse and its _core (make dev)
#   OLD: the same Python sources with a _core built from 83b1a32 (gradfuse's own thread pool)
#   OUT: where the JSON, markdown and terminal output go
set -euo pipefail
PY=${PY:-/work/main/.venv/bin/python}
export NEW=${NEW:?} OLD=${OLD:?} OUT=${OUT:?} PY
export RUNS=${RUNS:-2} UPDATE_RUNS=${UPDATE_RUNS:-1} STEP_REPEAT=${STEP_REPEAT:-11}
export UPDATE_REPEAT=${UPDATE_REPEAT:-7}
mkdir -p "$OUT"
flock -x /tmp/gf-heavy.lock bash -c '
set -euo pipefail
bench() {  # build pythonpath ops repeat tag
  echo "$(date -u +%T) $1 $5: $(cut -d" " -f1-3 /proc/loadavg)"
  env PYTHONPATH="$2" "$PY" -m gradfuse bench --ops "$3" --device cpu --repeat "$4" \
    --json "$OUT/$1-$5.json" --markdown "$OUT/$1-$5.md" >"$OUT/$1-$5.txt" 2>&1
}
for r in $(seq 1 "$RUNS"); do
  bench omp "$NEW" train_step "$STEP_REPEAT" "steps$r"
  bench pool "$OLD" train_step "$STEP_REPEAT" "steps$r"
done
for r in $(seq 1 "$UPDATE_RUNS"); do
  bench omp "$NEW" adamw,adamw_clip,sgd_momentum_wd "$UPDATE_REPEAT" "update$r"
  bench pool "$OLD" adamw,adamw_clip,sgd_momentum_wd "$UPDATE_REPEAT" "update$r"
done
echo "$(date -u +%T) done"
'
