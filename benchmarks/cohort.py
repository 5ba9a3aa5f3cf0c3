"""Cohorts on CPU: K = 1, 2, 4, 8 distinct architectures trained from one loader, against the
same K architectures each trained alone (one after another, each its own pass over the data,
the loaders built once as a chunk builds them), in the same run.

Data: ELPV's 300 px camera images as a JPEG .beton decoded to 64 and 128 px, the memory
backend at 64 px, and a loading-bound configuration: the JPEG .beton decoded with
random-resized crop + flip to 32 px, for AnyNetX_A networks of the demo's kind (decoding a
300 px JPEG costs more than training such a network on its 32 px crop, as decoding ImageNet
on a GPU node's cores costs more than a 370 MF network's step on the GPU).

Per cell: wall seconds; loader CPU seconds, split into training and test batches; compute
CPU seconds. Loader CPU is the CPU time of every thread but the main one while a loader pass
runs (FFCV's epoch thread and numba's workers: decoding, cropping, flipping; a thread that
sleeps on a queue costs nothing here, one that spins would) plus the main thread's CPU time
inside the loaders' `next()` (the memory backend's crops, FFCV's hand-over). Compute is the
rest of the main thread's CPU time: model build, steps, evaluation, the cohort driver. Other
threads' CPU time outside loader passes is printed as "stray" and should be near 0 (torch
runs one thread). Each figure is per cell: a cohort's total / K; the solo reference is the
mean over the same K architectures.

Run: .venv/bin/python benchmarks/cohort.py [--images 512] [--epochs 2] [--smoke]
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = _ROOT  # benchmarks/analysis.py must not shadow the analysis package

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from anynet.arch import Architecture  # noqa: E402
from hpc.study.recipe import Recipe  # noqa: E402
from hpc.worker.train import train_cell, train_cells  # noqa: E402
from loaders.pipelines import build_loaders  # noqa: E402
from loaders.prepare import prepare  # noqa: E402
from loaders.registry import get_dataset  # noqa: E402

KS = (1, 2, 4, 8)
# Two-stage networks with the stride-1 stem, as in the earlier table of this benchmark.
SMALL = [
    Architecture(
        depths=depths,
        widths=(w, 2 * w),
        bottleneck_ratios=(1.0, 1.0),
        group_widths=(8, 8),
        stem_width=8,
        stem="small",
    )
    for depths, w in [
        ((1, 1), 8),
        ((2, 1), 8),
        ((1, 1), 16),
        ((2, 1), 16),
        ((1, 1), 24),
        ((1, 2), 8),
        ((2, 1), 24),
        ((1, 1), 32),
    ]
]


@dataclass(frozen=True)
class Config:
    name: str
    archs: str  # "small" or "demo"
    options: dict[str, Any]  # get_dataset options
    augment: str = "auto"


CONFIGS = (
    Config("ffcv JPEG 64 px", "small", dict(backend="ffcv", encoding="jpg", resolution=64)),
    Config("ffcv JPEG 128 px", "small", dict(backend="ffcv", encoding="jpg", resolution=128)),
    Config("memory 64 px", "small", dict(backend="memory", resolution=64)),
    Config(
        "ffcv JPEG rrc 32 px", "demo", dict(backend="ffcv", encoding="jpg", resolution=32), "rrc"
    ),
)


def demo_archs(n: int) -> list[Architecture]:
    """The first `n` architectures of the demo study (hpc/study/presets/demo.toml's design)."""
    from hpc.study.population import sample_architectures
    from hpc.study.presets import PRESETS_DIR
    from hpc.study.spec import parse_study

    text = (PRESETS_DIR / "demo.toml").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        study = parse_study(text, tmp)
        archs = sample_architectures(study, write=False).archs
    return list(archs[:n])


def _others() -> float:
    """CPU seconds of every thread but this one (the main), ended threads included."""
    return time.process_time() - time.thread_time()


class Meter:
    """CPU seconds of the loaders, per phase ("train", "test"): the main thread's inside
    `next()`, and the other threads' from the start of a pass to its end; and the main
    thread's over whole passes (`passes`: its loader part included)."""

    def __init__(self) -> None:
        self.main = {"train": 0.0, "test": 0.0}
        self.others = {"train": 0.0, "test": 0.0}
        self.passes = {"train": 0.0, "test": 0.0}

    def metered(self, batches: Iterable[Any], phase: str) -> Iterator[Any]:
        it = iter(batches)
        others, main = _others(), time.thread_time()
        try:
            while True:
                start = time.thread_time()
                batch = next(it, None)
                self.main[phase] += time.thread_time() - start
                if batch is None:
                    return
                yield batch
        finally:
            self.others[phase] += _others() - others
            self.passes[phase] += time.thread_time() - main


class MeteredTrain:
    def __init__(self, loader: Any, meter: Meter) -> None:
        self.loader, self.meter = loader, meter

    @property
    def num_images(self) -> int:
        return self.loader.num_images

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, seed: int, epoch: int) -> Iterator[Any]:
        return self.meter.metered(self.loader.epoch(seed, epoch), "train")


class MeteredTest:
    def __init__(self, loader: Any, meter: Meter) -> None:
        self.loader, self.meter = loader, meter

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        return self.meter.metered(self.loader, "test")


@dataclass(frozen=True)
class Usage:
    """Seconds of one run, or per cell (`per`)."""

    wall: float
    train_load: float
    test_load: float
    compute: float
    steps: float  # of compute: the main thread's during training passes (steps, driver)
    stray: float

    @property
    def load(self) -> float:
        return self.train_load + self.test_load

    def per(self, cells: int) -> Usage:
        return Usage(*(v / cells for v in dataclasses.astuple(self)))

    def __add__(self, other: Usage) -> Usage:
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
        return Usage(*(a + b for a, b in pairs))


def timed(run: Callable[[Meter], object]) -> Usage:
    """Run `run(meter)` once and split its wall and CPU time."""
    meter = Meter()
    wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    run(meter)
    main = time.thread_time() - main
    others = time.process_time() - cpu - main
    wall = time.perf_counter() - wall
    m, o = meter.main, meter.others
    return Usage(
        wall=wall,
        train_load=m["train"] + o["train"],
        test_load=m["test"] + o["test"],
        compute=main - m["train"] - m["test"],
        steps=meter.passes["train"] - m["train"],
        stray=others - o["train"] - o["test"],
    )


def measure(config: Config, archs: list[Architecture], recipe: Recipe, loaders, classes: int):
    """Per K: (solo per cell over the K architectures, cohort per cell); and the loaders alone."""
    train, test = loaders
    init = list(range(len(archs)))

    def solo(i: int) -> Usage:
        return timed(
            lambda m: train_cell(
                archs[i],
                MeteredTrain(train, m),
                MeteredTest(test, m),
                recipe,
                seed=0,
                num_classes=classes,
                init_seed=init[i],
            )
        )

    def cohort(k: int) -> Usage:
        return timed(
            lambda m: train_cells(
                archs[:k],
                MeteredTrain(train, m),
                MeteredTest(test, m),
                recipe,
                seed=0,
                num_classes=classes,
                init_seeds=init[:k],
            )
        )

    def alone(m: Meter) -> None:
        for epoch in range(recipe.epochs):
            for _ in MeteredTrain(train, m).epoch(0, epoch):
                pass
            for _ in MeteredTest(test, m):
                pass

    solo(0)  # first use of a model (allocator, kernels): not timed
    solos: list[Usage] = []
    rows: dict[int, tuple[Usage, Usage]] = {}
    for k in KS[: config_ks(len(archs))]:
        while len(solos) < k:  # each solo run just before the cohort that first needs it
            solos.append(solo(len(solos)))
        reference = sum(solos[1:k], solos[0]).per(k)
        rows[k] = (reference, reference if k == 1 else cohort(k).per(k))
        print(f"{config.name} K={k}: solo {reference}\n  cohort {rows[k][1]}", flush=True)
    return rows, timed(alone)


def config_ks(n: int) -> int:
    return sum(1 for k in KS if k <= n)


def table(results: dict[str, tuple[dict[int, tuple[Usage, Usage]], Usage]], images: int) -> str:
    """The cohort table, then per configuration the shares and rates of its solo runs
    (`images`: training images per run, all epochs)."""
    lines = [
        "| data | K | wall s/cell | solo | wall vs solo | loader CPU s/cell (train + test) "
        "| solo | loader CPU vs solo (goal <= 1.2/K) | compute CPU s/cell | solo | compute vs solo |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (rows, _) in results.items():
        for k, (s, c) in rows.items():
            lines.append(
                f"| {name} | {k} | {c.wall:.2f} | {s.wall:.2f} | {c.wall / s.wall:.2f}x "
                f"| {c.load:.3f} ({c.train_load:.3f} + {c.test_load:.3f}) | {s.load:.3f} "
                f"| {c.load / s.load:.2f}x ({1.2 / k:.2f}x) | {c.compute:.2f} | {s.compute:.2f} "
                f"| {c.compute / s.compute:.2f}x |"
            )
    lines += [
        "",
        "| data | loading share of solo's CPU | loader CPU / solo wall | loaders alone, train "
        "+ test CPU s | train images per loader CPU s | solo: train images per step CPU s "
        "| stray CPU s/cell, largest |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (rows, alone) in results.items():
        s = rows[max(rows)][0]  # solo, the mean over every architecture
        stray = max(abs(u.stray) for pair in rows.values() for u in pair)
        lines.append(
            f"| {name} | {s.load / (s.load + s.compute):.0%} | {s.load / s.wall:.0%} "
            f"| {alone.train_load:.3f} + {alone.test_load:.3f} | {images / alone.train_load:.0f} "
            f"| {images / s.steps:.0f} | {stray:.3f} |"
        )
    return "\n".join(lines)


def run_config(config: Config, work: Path, images: int, epochs: int, ks: int) -> tuple:
    spec = get_dataset("elpv", max_train=images, max_test=images // 4, **config.options)
    prepared = prepare(spec, work, progress=False, num_workers=2)
    # torch 2.14.1's oneDNN convolution backward crashes (segfault, "double free") on this
    # CPU for the small-stem nets at 64 px and more, alone or in a cohort: oneDNN is off and
    # channels_last off for them; the demo's kind trains as the demo trains it.
    small = config.archs == "small"
    torch.backends.mkldnn.enabled = not small
    recipe = Recipe(
        epochs=epochs,
        batch_size=64,
        test_batch_size=256,
        channels_last=not small,
        augment=config.augment,
    )
    loaders = build_loaders(
        prepared,
        batch_size=recipe.batch_size,
        test_batch_size=recipe.test_batch_size,
        num_workers=recipe.num_workers,
        augment=recipe.augment,
    )
    for _ in loaders[0].epoch(0, 99):  # FFCV compiles at first use: not timed
        pass
    for _ in loaders[1]:
        pass
    archs = SMALL if small else demo_archs(len(SMALL))
    return measure(config, archs[: KS[ks - 1]], recipe, loaders, prepared.num_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="ELPV training images")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per cell")
    parser.add_argument("--only", nargs="*", default=None, help="configurations, by name")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--smoke", action="store_true", help="64 images, 1 epoch, K = 1 and 2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, epochs, ks = (64, 1, 2) if args.smoke else (args.images, args.epochs, len(KS))
    configs = [c for c in CONFIGS if args.only is None or c.name in args.only]
    if not configs:
        names = ", ".join(repr(c.name) for c in CONFIGS)
        raise SystemExit(f"--only names no configuration; the configurations: {names}")
    print(f"load average at start: {os.getloadavg()}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            work = Path(tmp) / str(len(results))
            results[config.name] = run_config(config, work, images, epochs, ks)
    print(f"load average at end: {os.getloadavg()}")
    print(table(results, images * epochs))
    if args.json:
        figures = {
            name: {
                "rows": {
                    k: {"solo": dataclasses.asdict(s), "cohort": dataclasses.asdict(c)}
                    for k, (s, c) in rows.items()
                },
                "alone": dataclasses.asdict(alone),
            }
            for name, (rows, alone) in results.items()
        }
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
