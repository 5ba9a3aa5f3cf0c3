#!/usr/bin/env bash
# Runs benchmarks/gpu.py on the CUDA device with the system python3 (no virtual environment);
# arguments are passed on. The log goes to $OUT/gpu.log (else /tmp/gpu.log), the tables and
# a JSON of all figures to $OUT (else a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi
fi
mkdir -p "${OUT:-/tmp}"
python3 benchmarks/gpu.py --device cuda "$@" 2>&1 | tee "${OUT:-/tmp}/gpu.log"
