"""Trainer speed and per-cell overhead on CPU, one thread, 10k 28x28 Fashion-MNIST images.

1. images/s of `hpc.worker.train.train_cell` against a minimal hand-written PyTorch loop, same
   model, same in-memory batches (training only; evaluation excluded from both).
2. The share of a 1-epoch cell's wall time spent on model build, loader reuse, checkpoint
   restore/write and result writing, measured through `hpc.worker.run_chunk`.

Run: .venv/bin/python benchmarks/trainer.py [--repeats 5] [--cells 4]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, and benchmarks/analysis.py would
# shadow the analysis package: put the repository root there instead.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = _ROOT

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from anynet.arch import Architecture  # noqa: E402
from anynet.model import build_model  # noqa: E402
from hpc.scheduling.manifest import write_manifest  # noqa: E402
from hpc.study.recipe import Recipe  # noqa: E402
from hpc.worker import run_chunk  # noqa: E402
from hpc.worker.train import train_cell  # noqa: E402
from loaders.pipelines import build_loaders  # noqa: E402
from loaders.prepare import prepare  # noqa: E402
from loaders.registry import get_dataset  # noqa: E402

SPEC = get_dataset("fashion_mnist", max_train=10_000, max_test=2_000)
ARCH = Architecture(
    depths=(1, 1, 2),
    widths=(16, 32, 64),
    bottleneck_ratios=(1.0, 1.0, 1.0),
    group_widths=(8, 8, 8),
    stem_width=16,
    stem="small",
)
RECIPE = Recipe(epochs=1, batch_size=128, test_batch_size=1000)


class ListLoader:
    """The same precomputed batches every epoch: both loops read identical in-memory data.

    Each pass records its wall and CPU seconds, from the first request to exhaustion, so both
    loops are timed the same way; CPU seconds stay meaningful on a busy machine."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.images = sum(len(labels) for _, labels in batches)
        self.seconds = (float("nan"), float("nan"))  # wall, CPU

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield from self.batches
        self.seconds = (time.perf_counter() - wall, time.process_time() - cpu)


def hand_loop(loader: ListLoader, num_classes: int) -> None:
    """The plainest loop: forward, loss, backward, SGD step."""
    torch.manual_seed(0)
    model = build_model(ARCH, num_classes=num_classes)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=RECIPE.lr, momentum=RECIPE.momentum, weight_decay=RECIPE.weight_decay
    )
    criterion = nn.CrossEntropyLoss()
    model.train()
    for images, labels in loader.epoch(0, 0):
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()


def throughput(data_dir: Path, repeats: int) -> None:
    prepared = prepare(SPEC, data_dir, progress=False)
    train, test = build_loaders(
        prepared, batch_size=RECIPE.batch_size, test_batch_size=RECIPE.test_batch_size, device="cpu"
    )
    batches = [(x.clone(), y.clone()) for x, y in train.epoch(0, 0)]
    loader = ListLoader(batches)
    hand_loop(ListLoader(batches[:4]), prepared.num_classes)  # warm-up: allocator, kernels
    rates: dict[str, list[tuple[float, float]]] = {"hand": [], "trainer": []}
    reported = []
    for _ in range(repeats):  # interleaved, so machine load hits both alike
        hand_loop(loader, prepared.num_classes)
        rates["hand"].append(tuple(loader.images / s for s in loader.seconds))
        out = train_cell(ARCH, loader, test, RECIPE, seed=0, num_classes=prepared.num_classes)
        rates["trainer"].append(tuple(loader.images / s for s in loader.seconds))
        reported.append(out.images_per_s)
    print(
        f"model {ARCH.name}, {len(batches)} batches of {RECIPE.batch_size} (28x28), 1 thread, "
        f"median of {repeats} interleaved runs"
    )
    for i, clock in enumerate(("wall", "CPU")):
        hand = [r[i] for r in rates["hand"]]
        ours = [r[i] for r in rates["trainer"]]
        ratios = [a / b for a, b in zip(ours, hand, strict=True)]
        print(
            f"{clock:>4} clock: hand-written {statistics.median(hand):6.0f} images/s, train_cell "
            f"{statistics.median(ours):6.0f} images/s, ratio {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    print(
        f"train_cell's own images_per_s (its result field): median {statistics.median(reported):.0f}"
    )


def overhead(study: Path, cells: int) -> None:
    (study / "data").mkdir(parents=True, exist_ok=True)
    prepare(SPEC, study / "data", progress=False)
    print(
        f"\nper-cell overhead: 1-epoch cells on {SPEC.max_train} Fashion-MNIST images, "
        f"test {SPEC.max_test}, via hpc.worker.run_chunk"
    )
    parts = ("loaders", "build", "restore", "checkpoint", "write")
    print(
        f"{'cell':>4} {'wall s':>7} {'train s':>7} {'eval s':>6} "
        + " ".join(f"{p:>10}" for p in parts)
        + f" {'overhead':>9}"
    )
    shares = []
    for seed in range(cells):
        manifest = study / "jobs" / f"{seed}.json"
        write_manifest(
            manifest,
            study_dir=study,
            dataset=SPEC,
            recipe=RECIPE,
            cells=[(0, seed, ARCH)],
            device="cpu",
            threads=1,
        )
        timings: dict[str, float] = {}
        start = time.perf_counter()
        run_chunk(manifest, timings=timings)
        wall = time.perf_counter() - start
        train_s, eval_s = timings["train"], timings["eval"]
        spent = sum(timings.get(p, 0.0) for p in parts)
        share = spent / wall
        if seed:
            shares.append(share)
        print(
            f"{seed:>4} {wall:7.2f} {train_s:7.2f} {eval_s:6.2f} "
            + " ".join(f"{timings.get(p, 0.0):10.4f}" for p in parts)
            + f" {100 * share:8.2f}%"
        )
    print("cell 0 builds the loaders; later cells reuse them.")
    if shares:
        print(
            f"overhead share of wall time, cells 1..{cells - 1}: median "
            f"{100 * statistics.median(shares):.2f}% (limit 10%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs of each loop")
    parser.add_argument("--cells", type=int, default=4, help="1-epoch cells for the overhead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="anysweep-bench-") as tmp:
        overhead(Path(tmp) / "study", args.cells)
        print()
        throughput(Path(tmp) / "study" / "data", args.repeats)


if __name__ == "__main__":
    main()
