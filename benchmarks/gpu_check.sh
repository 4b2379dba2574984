#!/usr/bin/env bash
# Issue 13's GPU figures in one run (about 8 minutes on an H200): precision candidates, ofa_mbv3
# Fashion-MNIST throughput with 12 processes, calibration of the protocol. Writes JSON.
#   benchmarks/gpu_check.sh [--out gpu_check.json] [--workers 12]     # on the GPU machine
#   benchmarks/gpu_check.sh --quick --device cpu --out /tmp/q.json     # seconds, to check the script
# Options are those of `python -m benchmarks.gpu_check --help`. Stops itself after $GPU_CHECK_LIMIT_S
# (default 540) seconds; the JSON keeps every step that finished.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
exec timeout --signal=TERM --kill-after=20 "${GPU_CHECK_LIMIT_S:-540}" "$PY" -m benchmarks.gpu_check "$@"
