"""Training-free scores: seconds per score per (architecture, dataset) on one thread, for the
demo's architectures (hpc/study/presets/demo.toml) on 28 px images and on 64 px images, with the
demo's batch size; and what every score of every (architecture, dataset) would add to the demo.

Run: .venv/bin/python benchmarks/scores.py [--architectures 24] [--repeats 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from anynet import scores  # noqa: E402
from anynet.complexity import complexity  # noqa: E402
from anynet.sampler import sample  # noqa: E402
from anynet.spaces import get_space  # noqa: E402

PRESET = Path(__file__).resolve().parent.parent / "hpc" / "study" / "presets" / "demo.toml"
SPACE_KEYS = ("stages", "max_depth", "max_width", "stem", "stem_width")


def demo_architectures(n: int) -> tuple[list, dict]:
    """The first n architectures of the demo study and its preset."""
    preset = tomllib.loads(PRESET.read_text())
    design = preset["design"]
    space = get_space(design["space"], **{k: design[k] for k in SPACE_KEYS if k in design})
    drawn = sample(
        space,
        n,
        seed=design["seed"],
        resolution=design["resolution"],
        num_classes=design["num_classes"],
        flops=tuple(design["flops"]),
    )
    return [s.arch for s in drawn], preset


def score_calls(model, images, labels, arch, classes) -> dict:
    res = images.shape[-1]
    return {
        "naswot": lambda: scores.naswot(model, images),
        "synflow": lambda: scores.synflow(model, images),
        "grad_norm+snip": lambda: scores.grad_norm_and_snip(model, images, labels),
        "jacob_cov": lambda: scores.jacob_cov(model, images),
        "params+flops": lambda: complexity(arch, res, classes, 3),
        "init (build_model)": lambda: scores.seeded_model(arch, classes, 3, 0),
    }


def measure(archs: list, res: int, batch: int, classes: int, repeats: int) -> dict[str, float]:
    """Median seconds per architecture of each score (and of building the model)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, res, res, generator=gen)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    per_score: dict[str, list[float]] = {}
    for arch in archs:
        model = scores.seeded_model(arch, classes, 3, 0)
        for name, call in score_calls(model, images, labels, arch, classes).items():
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            per_score.setdefault(name, []).append(min(times))
    return {name: statistics.mean(t) for name, t in per_score.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architectures", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    archs, preset = demo_architectures(args.architectures)
    batch = preset["recipe"]["batch_size"]
    datasets = len(preset["datasets"])
    print(f"{len(archs)} demo architectures, minibatch {batch}, one thread, best of {args.repeats}")
    for res in (28, 64):
        seconds = measure(archs, res, batch, 10, args.repeats)
        total = sum(seconds.values())
        print(f"\n{res} px: mean seconds per (architecture, dataset)")
        for name, value in seconds.items():
            print(f"  {name:20s} {value:8.4f}")
        print(f"  {'all':20s} {total:8.4f}")
        pairs = 24 * datasets
        print(
            f"  the demo ({pairs} pairs: 24 architectures x {datasets} datasets): "
            f"{pairs * total:.1f} s on one core, {pairs * total / 2:.1f} s on two"
        )


if __name__ == "__main__":
    main()
