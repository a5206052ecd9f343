#!/usr/bin/env bash
# One pass of every GPU figure and test, for a machine with a CUDA card and a PyTorch of its own but none
# of our other dependencies: those come as wheels in .whl/ (any/ plus cp3XX/ for this Python), installed
# beside the repo without touching the machine's packages. Figures and logs go to $OUT (default ./gpu-out).
#     bash bench/gpu_check.sh
# Each step has its own time limit, so one that hangs cannot take the others' figures with it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  tag=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/any/*.whl .whl/"$tag"/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())'
} 2>&1 | tee "$OUT/machine.txt"

step() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | grep -v -E "^(DEBUG|INFO) " | tail -25
  echo "=== $name: exit ${PIPESTATUS[0]}"
}

step cuda_tests 150 python3 -m pytest -q -p no:cacheprovider tests/cuda tests/unit/test_engine_precision.py
step train_throughput 150 python3 bench/train_throughput.py --device cuda --quick
step scaling 190 python3 bench/scaling.py --device cuda --quick --precision 32 bf16-mixed
step session_latency 70 python3 bench/session_latency.py --quick
