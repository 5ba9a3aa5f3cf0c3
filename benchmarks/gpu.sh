#!/usr/bin/env bash
# Runs benchmarks/gpu.py on the CUDA device with the system python3 (no virtual environment),
# after installing the wheels of dist/gpu-wheels (make gpu-wheels; carried to the device);
# arguments are passed on. The log goes to $OUT/gpu.log (else /tmp/gpu.log), the tables and
# a JSON of all figures to $OUT (else a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi
fi
mkdir -p "${OUT:-/tmp}"
# The wheels `make gpu-wheels` built (ffcv and what it needs that the image lacks), carried
# here as dist/gpu-wheels: installed first, with no package index, beside the image's own.
WHEELS=${GPU_WHEELS:-dist/gpu-wheels}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --find-links "$WHEELS" --target /tmp/gpu-site "$WHEELS"/*.whl
    export PYTHONPATH=$PWD:/tmp/gpu-site
else
    echo "gpu.sh: no wheels in $WHEELS (make gpu-wheels): the FFCV row is skipped" >&2
fi
python3 benchmarks/gpu.py --device cuda "$@" 2>&1 | tee "${OUT:-/tmp}/gpu.log"
