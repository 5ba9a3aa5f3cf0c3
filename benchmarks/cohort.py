"""Cohorts on CPU: one loader trains K = 1, 2, 4, 8 distinct architectures (ELPV, 300 px
camera images: a JPEG .beton at 64 and 128 px, and the memory backend at 64 px).

Per cell, in one run: wall seconds of the training epoch, loader CPU seconds (process CPU
time outside the members' steps and evaluation: decoding and augmenting, not waiting), and
compute seconds (the members' steps). One torch thread; the loader's first epoch (FFCV's
compilation) is spent before timing. Ratios are against K = 1 of the same data.

Run: .venv/bin/python benchmarks/cohort.py [--images 512] [--smoke]
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = _ROOT  # benchmarks/analysis.py must not shadow the analysis package

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from anynet.arch import Architecture  # noqa: E402
from hpc.study.recipe import Recipe  # noqa: E402
from hpc.worker.cohort import train_cohort  # noqa: E402
from hpc.worker.train import CellRun  # noqa: E402
from loaders.pipelines import build_loaders  # noqa: E402
from loaders.prepare import prepare  # noqa: E402
from loaders.registry import get_dataset  # noqa: E402

KS = (1, 2, 4, 8)
# torch 2.14.1's oneDNN (mkldnn) convolution backward crashes (segfault, "double free") on this
# CPU for these grouped-conv nets at 64 px and more, alone or in a cohort: main() turns
# mkldnn off and the recipe channels_last off.
RECIPE = Recipe(epochs=1, batch_size=64, test_batch_size=256, channels_last=False)
ARCHS = [
    Architecture(
        depths=(d, 1),
        widths=(w, 2 * w),
        bottleneck_ratios=(1.0, 1.0),
        group_widths=(8, 8),
        stem_width=8,
        stem="small",
    )
    for d, w in [(1, 8), (2, 8), (1, 16), (2, 16), (1, 24), (1, 8), (2, 24), (1, 32)]
]
ARCHS[5] = Architecture(
    depths=(1, 2),
    widths=(8, 16),
    bottleneck_ratios=(1.0, 1.0),
    group_widths=(8, 8),
    stem_width=8,
    stem="small",
)


class TimedRun(CellRun):
    """A cohort member that sums the wall and thread CPU seconds of its steps and epoch end."""

    compute_s = compute_cpu = eval_s = eval_cpu = 0.0

    def step(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> bool:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return super().step(inputs, labels, step)
        finally:
            self.compute_s += time.perf_counter() - wall
            self.compute_cpu += time.thread_time() - cpu

    def end_epoch(self, test_loader, data_seconds: float) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            super().end_epoch(test_loader, data_seconds)
        finally:
            self.eval_s += time.perf_counter() - wall
            self.eval_cpu += time.thread_time() - cpu


def measure(train, test, classes: int, k: int) -> dict[str, float]:
    """One timed epoch of a cohort of the first `k` architectures; figures per cell."""
    runs = [
        TimedRun(a, RECIPE, seed=0, num_classes=classes, steps_per_epoch=len(train), init_seed=i)
        for i, a in enumerate(ARCHS[:k])
    ]
    wall, cpu = time.perf_counter(), time.process_time()
    train_cohort(runs, train, test, seed=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    evals = sum(r.eval_s for r in runs)
    own = sum(r.compute_cpu + r.eval_cpu for r in runs)
    return {
        "wall": (wall - evals) / k,
        "loader_cpu": (cpu - own) / k,
        "compute": sum(r.compute_s for r in runs) / k,
    }


def datasets(work: Path, images: int) -> list[tuple[str, dict]]:
    common = dict(max_train=images, max_test=128)
    return [
        ("ffcv JPEG 64 px", dict(backend="ffcv", encoding="jpg", resolution=64, **common)),
        ("ffcv JPEG 128 px", dict(backend="ffcv", encoding="jpg", resolution=128, **common)),
        ("memory 64 px", dict(backend="memory", resolution=64, **common)),
    ]


def table(rows: dict[str, dict[int, dict[str, float]]]) -> str:
    lines = [
        "| data | K | wall s/cell | loader CPU s/cell | compute s/cell | wall vs K=1 | "
        "loader CPU vs K=1 (goal <= 1.2/K) | loading share of solo |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, by_k in rows.items():
        solo = by_k[1]
        share = solo["loader_cpu"] / solo["wall"]
        for k, r in by_k.items():
            lines.append(
                f"| {name} | {k} | {r['wall']:.2f} | {r['loader_cpu']:.2f} | {r['compute']:.2f} | "
                f"{r['wall'] / solo['wall']:.2f}x | {r['loader_cpu'] / solo['loader_cpu']:.2f}x "
                f"({1.2 / k:.2f}x) | {share:.0%} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="ELPV training images")
    parser.add_argument("--smoke", action="store_true", help="64 images, K = 1 and 2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    ks = KS[:2] if args.smoke else KS
    rows: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in datasets(Path(tmp), 64 if args.smoke else args.images):
            spec = get_dataset("elpv", **options)
            prepared = prepare(spec, Path(tmp) / "data", progress=False, num_workers=2)
            train, test = build_loaders(
                prepared, batch_size=RECIPE.batch_size, test_batch_size=256, num_workers=2
            )
            for _ in train.epoch(0, 99):  # FFCV compiles at first use: not timed
                pass
            for _ in test:
                pass
            rows[name] = {}
            for k in ks:
                rows[name][k] = measure(train, test, prepared.num_classes, k)
                print(f"{name} K={k}: {rows[name][k]}", flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
