#!/usr/bin/env bash
# The prepared GPU check (DESIGN.md §9, `make gpu-check`): run on the GPU machine, from the
# repository root. Builds gradfuse for the card with no downloads, runs the CUDA tests, runs
# compute-sanitizer (memcheck, racecheck, initcheck, synccheck) over them, measures the card's
# copy bandwidth and runs `gradfuse bench --device cuda`. Full logs go to $OUT (default
# ./gpu-out); a short table is printed last.
set -uo pipefail
OUT=${OUT:-$(pwd)/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
status=()
note() { status+=("$(printf '%-28s %s' "$1" "$2")"); }

cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
arch=${GRADFUSE_CUDA_ARCH:-${cap:-90}}
{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -2
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

if $PY -m pip install --no-build-isolation --no-deps -v . \
    -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$arch" > "$OUT/build.log" 2>&1; then
  note build "ok (sm_$arch)"
else
  note build "FAILED (see build.log)"
  tail -40 "$OUT/build.log"
  printf '%s\n' "${status[@]}"
  exit 1
fi
$PY -m gradfuse info > "$OUT/info.txt" 2>&1

# Each stage has a time limit (seconds, overridable), so that a slow one still leaves the
# stages after it their turn within a GPU session's few minutes; a stage cut short says so.
T_PYTEST=${GRADFUSE_PYTEST_TIMEOUT:-300}
T_SANITIZER=${GRADFUSE_SANITIZER_TIMEOUT:-120}
T_BENCH=${GRADFUSE_BENCH_TIMEOUT:-420}
timed_out() { [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; }

(cd tests && timeout "$T_PYTEST" $PY -m pytest -q -m cuda -p no:cacheprovider) > "$OUT/pytest_cuda.log" 2>&1
rc=$?
if timed_out $rc; then
  note "pytest -m cuda" "CUT SHORT after ${T_PYTEST}s (see pytest_cuda.log)"
else
  note "pytest -m cuda" "$(tail -1 "$OUT/pytest_cuda.log")"
fi

# compute-sanitizer over the CUDA tests but those marked no_sanitizer (long ones: a 16M-element
# tensor, every 8-bit optimizer in every dtype), which the run above covers. (-k cannot leave
# them out by name: it matches markers too, and every one is marked cuda.)
SAN_M=${GRADFUSE_SANITIZER_M:-"cuda and not no_sanitizer"}
for tool in memcheck racecheck initcheck synccheck; do
  (cd tests && timeout "$T_SANITIZER" compute-sanitizer --tool "$tool" --error-exitcode 99 \
      $PY -m pytest -q -x -m "$SAN_M" -p no:cacheprovider) > "$OUT/sanitizer_$tool.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    note "compute-sanitizer $tool" "clean"
  elif timed_out $rc; then
    note "compute-sanitizer $tool" "CUT SHORT after ${T_SANITIZER}s, no error before (see log)"
  else
    note "compute-sanitizer $tool" "ERRORS (see sanitizer_$tool.log)"
  fi
done

$PY - > "$OUT/copy_bandwidth.txt" 2>&1 <<'PYEOF'
import torch
n = 1 << 28  # 1 GiB of float32 per buffer
a = torch.randn(n, device="cuda"); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(20):
    start.record(); b.copy_(a); end.record(); end.synchronize()
    times.append(start.elapsed_time(end) / 1e3)
times.sort()
print(f"device-to-device copy: {2 * a.numel() * 4 / times[len(times) // 2] / 1e9:.1f} GB/s (median of 20, 2 x 1 GiB moved)")
PYEOF
note "copy bandwidth" "$(tail -1 "$OUT/copy_bandwidth.txt")"

timeout "$T_BENCH" gradfuse bench --device cuda --json "$OUT/bench_cuda.json" \
    --plot "$OUT/bench_cuda.png" > "$OUT/bench_cuda.txt" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
  note "gradfuse bench --device cuda" "ok (bench_cuda.txt)"
elif timed_out $rc; then
  note "gradfuse bench --device cuda" "CUT SHORT after ${T_BENCH}s (see bench_cuda.txt)"
else
  note "gradfuse bench --device cuda" "FAILED (see bench_cuda.txt)"
fi

echo
tail -40 "$OUT/bench_cuda.txt"
echo
echo "== gradfuse gpu-check =="
printf '%s\n' "${status[@]}"
