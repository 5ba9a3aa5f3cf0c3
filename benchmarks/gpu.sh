#!/usr/bin/env bash
# Runs benchmarks/gpu.py on the CUDA device with the system python3 (no virtual environment),
# after installing the wheels of dist/gpu-wheels (make gpu-wheels; carried to the device);
# arguments are passed on. The log, the tables, a JSON of all figures and the rows for
# hpc/throughput.toml go to $OUT (else /tmp/anysweep-gpu),
# rewritten after every row. gpu.py keeps to --budget-s (300 s by default, about 5.5 minutes
# with the start-up); past it by GPU_GRACE_S (45 s) it is interrupted, writes what it has and
# exits, and 15 s later it is killed: the whole script ends within about 6.5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT_DIR=${OUT:-/tmp/anysweep-gpu}
mkdir -p "$OUT_DIR"
export OUT=$OUT_DIR
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv || true
fi
# The wheels `make gpu-wheels` built (ffcv and what it needs that the image lacks), carried
# here as dist/gpu-wheels: installed first, with no package index, beside the image's own.
WHEELS=${GPU_WHEELS:-dist/gpu-wheels}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --find-links "$WHEELS" --target /tmp/gpu-site "$WHEELS"/*.whl; then
        export PYTHONPATH=$PWD:/tmp/gpu-site
    else
        echo "gpu.sh: installing $WHEELS failed: the FFCV rows are skipped" >&2
    fi
else
    echo "gpu.sh: no wheels in $WHEELS (make gpu-wheels): the FFCV rows are skipped" >&2
fi
# The budget gpu.py is given (the last --budget-s among the arguments wins, as in argparse).
BUDGET=300
prev=""
for arg in "$@"; do
    case "$arg" in
        --budget-s=*) BUDGET=${arg#--budget-s=} ;;
    esac
    [ "$prev" = "--budget-s" ] && BUDGET=$arg
    prev=$arg
done
LIMIT=$(python3 -c "import sys; print(int(float(sys.argv[1]) + float(sys.argv[2])))" \
    "$BUDGET" "${GPU_GRACE_S:-45}")
timeout --signal=INT --kill-after=15 "$LIMIT" \
    python3 benchmarks/gpu.py --device cuda "$@" 2>&1 | tee "$OUT_DIR/gpu.log"
status=${PIPESTATUS[0]}
python3 -m benchmarks.gpu_throughput "$OUT_DIR/gpu_results.json" >"$OUT_DIR/throughput_rows.toml" \
    2>>"$OUT_DIR/gpu.log" || echo "gpu.sh: no throughput rows (see gpu.log)" >&2
echo "gpu.sh: gpu.py exited $status; files in $OUT_DIR:"
ls -l "$OUT_DIR"
exit "$status"
