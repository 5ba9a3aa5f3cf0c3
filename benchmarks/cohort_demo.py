"""Do cohorts pay in the demo? The demo's kind of cell (its first architectures, its recipe,
its datasets on the memory backend, one torch thread per process as its local runs use)
trained through the worker (`hpc.worker.run_chunk`, checkpoints and result files included)
in cohorts of 1, 2 and 4, several rounds in alternating order so that machine load hits
every size alike. Prints CPU and wall seconds per cell and their ratio to cohorts of one:
the demo keeps both cores busy with one process each, so CPU seconds per cell are what its
wall time follows.

Run: .venv/bin/python benchmarks/cohort_demo.py [--cells 8] [--rounds 2]
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = _ROOT  # benchmarks/analysis.py must not shadow the analysis package

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from hpc.scheduling.manifest import write_manifest  # noqa: E402
from hpc.study.population import sample_architectures  # noqa: E402
from hpc.study.presets import PRESETS_DIR  # noqa: E402
from hpc.study.spec import parse_study  # noqa: E402
from hpc.worker import run_chunk  # noqa: E402
from loaders.prepare import prepare  # noqa: E402

SIZES = (1, 2, 4)
DATASETS = ("fashion_mnist", "elpv")


def run(study, name: str, archs, k: int, root: Path, data_dir: Path) -> tuple[float, float]:
    """(CPU s, wall s) of one chunk of the cells (0..n-1, seed 0) in cohorts of `k`."""
    entry = study.dataset(name)
    manifest = root / "jobs" / f"{name}.json"
    write_manifest(
        manifest,
        study_dir=root,
        dataset=entry.spec,
        recipe=entry.recipe,
        cells=[(i, 0, a) for i, a in enumerate(archs)],
        device="cpu",
        threads=1,
        data_dir=data_dir,
        cohort=k,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    results = run_chunk(manifest)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if any(r.status != "done" for r in results):
        raise SystemExit(f"{name}, cohorts of {k}: a cell did not finish: {results}")
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8, help="demo architectures per chunk")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the cohort sizes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = (PRESETS_DIR / "demo.toml").read_text()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="anysweep-cohort-demo-") as tmp:
        study = parse_study(text, tmp)
        archs = sample_architectures(study, write=False).archs[: args.cells]
        data_dir = Path(tmp) / "data"
        figures: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for name in DATASETS:
            prepare(study.dataset(name).spec, data_dir, progress=False)
            run(study, name, archs[:1], 1, Path(tmp) / "warm" / name, data_dir)  # not timed
            for r in range(args.rounds):
                for k in SIZES if r % 2 == 0 else SIZES[::-1]:
                    where = Path(tmp) / f"{name}-k{k}-r{r}"
                    figures.setdefault((name, k), []).append(
                        run(study, name, archs, k, where, data_dir)
                    )
                    cpu, wall = figures[(name, k)][-1]
                    print(f"{name} K={k} round {r}: CPU {cpu:.2f} s, wall {wall:.2f} s", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print(
        f"\n{args.cells} demo cells per dataset, {args.rounds} rounds, medians per cell\n"
        "| dataset | K | CPU s/cell | vs K=1 | wall s/cell | vs K=1 |\n|---|---|---|---|---|---|"
    )
    for name in DATASETS:
        base = [statistics.median(v[i] for v in figures[(name, 1)]) for i in (0, 1)]
        for k in SIZES:
            cpu, wall = (statistics.median(v[i] for v in figures[(name, k)]) for i in (0, 1))
            print(
                f"| {name} | {k} | {cpu / args.cells:.3f} | {cpu / base[0]:.3f}x "
                f"| {wall / args.cells:.3f} | {wall / base[1]:.3f}x |"
            )


if __name__ == "__main__":
    main()
