"""Checks an installed ffcv wheel from `make gpu-wheels`: which shared libraries its extension
loads, and one FFCV epoch (JPEG .beton, random-resized crop 224) on the CPU.

Prints `ldd` of ffcv's extension, then the shared libraries that loading it maps into a
process that already holds torch and numpy, each marked `bundled` (inside the wheel's
ffcv.libs) or `system`; exits 1 if a system library outside the C/C++ runtime family is among
them or the epoch yields the wrong count.
Run: PYTHONPATH=. VENV/bin/python benchmarks/gpu_wheels_check.py
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = _ROOT

# The C and C++ runtimes every Linux has (auditwheel's policy leaves them to the system).
RUNTIME = re.compile(
    r"/(ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so"
)


def mapped() -> set[str]:
    """Paths of the shared libraries mapped into this process."""
    text = Path("/proc/self/maps").read_text()
    return {line.split()[-1] for line in text.splitlines() if ".so" in line.split()[-1]}


def loaded_by_extension(ext: Path) -> list[str]:
    """Libraries that loading ffcv's extension (dlopen, as its import does, without the rest
    of the ffcv package) adds to a process that holds torch and numpy."""
    import numpy  # noqa: F401
    import torch  # noqa: F401

    before = mapped()
    ctypes.CDLL(str(ext))
    return sorted(mapped() - before - {str(ext)})


def one_epoch(n: int = 64) -> tuple[int, float]:
    """(images, seconds) of one FFCV epoch over a fresh JPEG .beton of `n` 256 px images."""
    import torch

    from benchmarks.gpu_ffcv import bare_loader, write

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        beton = write(n, cpu, Path(tmp), workers=2, stored=(256, 256), resolution=224)
        loader = bare_loader(beton, 16, cpu, workers=2)
        start = time.perf_counter()
        count = sum(len(y) for x, y in loader if x.shape[1:] == (3, 224, 224))
        return count, time.perf_counter() - start


def main() -> int:
    spec = importlib.util.find_spec("ffcv")  # found, not imported: its import loads the extension
    assert spec is not None and spec.submodule_search_locations, "ffcv is not installed"
    ext = next(Path(spec.submodule_search_locations[0]).glob("_libffcv*.so"))
    print(f"$ ldd {ext}\n" + subprocess.run(["ldd", ext], capture_output=True, text=True).stdout)
    libs = loaded_by_extension(ext)
    bundled = str(ext.parent.parent / "ffcv.libs")
    foreign = [p for p in libs if not p.startswith(bundled) and not RUNTIME.search(p)]
    print(f"mapped by loading {ext.name}:")
    for p in libs:
        print(f"  {'bundled' if p.startswith(bundled) else 'system '} {p}")
    count, secs = one_epoch()
    print(f"one FFCV epoch: {count} images of 3x224x224 in {secs:.1f} s (first epoch, JIT)")
    if foreign:
        print(f"FAIL: system libraries outside the C/C++ runtime: {foreign}")
    return 1 if foreign or count != 64 else 0


if __name__ == "__main__":
    sys.exit(main())
