"""The study layer at scale: every verb a user runs on a login node, timed as they run it
(`python -m hpc.cli VERB DIR`), on studies of 6,000, 60,000 and 600,000 cells
(50, 500 and 5,000 AnyNetX_A architectures x 40 datasets x 3 seeds).

    python -m benchmarks.scale [--sizes 6000,60000,600000] [--work DIR] [--keep]

Cells are synthetic (no training): plausible errors, curves and provenance, written through
the real writer (hpc.study.packs, one append per array task, into the pack of the task the
launch record names; not synced to disk: the data is thrown away; a process per core).
The datasets are digits and subsets of it (prepared once, a second): the verbs never read
images. The scheduler's view is faked where it must be: the launch is `anysweep sbatch`
(manifests, scripts and record, submitted by nobody) and `squeue` is a script on PATH that
prints, from a file, a line for every task of the record (the last 256 running, the rest
pending) and counts its calls; every other Slurm client on PATH fails. Each task leaves a
scheduler log, as sbatch arrays do. Prints a table of each figure against its goal per size, with the peak memory of
each verb, results.h5 bytes per cell and files per cell after `clean`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {6_000: 50, 60_000: 500, 600_000: 5_000}  # cells -> architectures
SEEDS = 3
# Subsets of k classes drawn with several seeds: 39 datasets that read digits' files.
SUBSETS = [f"digits_k{k}_s{s}" for s in range(5) for k in range(2, 11)][:39]
DATASETS = ["digits", *SUBSETS]
NEW_CELLS = 1_000  # written after the first collect: the incremental one reads these
RUNNING_TASKS = 256
ANALYZE_TIMEOUT_S = 900
GOALS = {  # figure -> (goal, unit)
    "launch --dry-run": (10.0, "s"),
    "launch (sbatch: manifests, scripts, record)": (60.0, "s"),
    "status, index cold": (60.0, "s"),
    "status, index warm": (5.0, "s"),
    "squeue calls per status": (1, ""),
    "collect from nothing": (120.0, "s"),
    f"collect after {NEW_CELLS:,} new cells": (10.0, "s"),
    "analyze": (300.0, "s"),
    "results.h5 per cell": (2048, "B"),
    "files per finished cell after clean": (1.1, ""),
    "peak memory of any verb": (4096, "MB"),
}


def study_toml(architectures: int) -> str:
    """The paper's design space and recipe on digits and 39 of its subsets; cluster settings
    that make array tasks of about a dozen cells."""
    datasets = "\n".join(f"[datasets.{name}]" for name in DATASETS[1:])
    return f"""\
[study]
name = "scale"
reference = "digits"
architectures = {architectures}
seeds = {SEEDS}

[design]
space = "anynetx_a"
seed = 0
resolution = 224
num_classes = 1000
flops = [340_000_000, 400_000_000]

[recipe]
epochs = 10

[cluster]
time_min = 240
margin = 0.75
throughput = 8e7

[datasets.digits]
resolution = 16

{datasets}
"""


# --- the scheduler's view ----------------------------------------------------------------


def fake_clients(folder: Path) -> dict[str, str]:
    """A bin folder with `squeue` (prints squeue.txt, counts its calls) and every other
    Slurm client failing; the environment that puts it first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    squeue = folder / "squeue"
    squeue.write_text(f'#!/bin/sh\necho x >> "{folder}/squeue.calls"\ncat "{folder}/squeue.txt"\n')
    for name in ("sbatch", "scancel", "sacct", "scontrol", "srun", "sinfo"):
        (folder / name).write_text(f'#!/bin/sh\necho "{name}: not in this benchmark" >&2\nexit 1\n')
    for path in folder.iterdir():
        path.chmod(0o755)
    (folder / "squeue.txt").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def squeue_calls(folder: Path) -> int:
    calls = folder / "squeue.calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def write_squeue(folder: Path, study: Path) -> int:
    """squeue's answer for every task of the study's records: the last RUNNING_TASKS run
    (the end of the launch), the others wait (a task's line: `<job>_<task>|<job name>|
    <state>`). Returns the lines."""
    from hpc.scheduling.records import read_records
    from hpc.study.spec import load_study

    tasks = [
        (f"{9000 + k}_{i}", array.job_name)
        for record in read_records(load_study(study))
        for k, array in enumerate(record.arrays)
        for i in range(len(array))
    ]
    first = len(tasks) - RUNNING_TASKS
    lines = [
        f"{job}|{name}|{'RUNNING' if n >= first else 'PENDING'}"
        for n, (job, name) in enumerate(tasks)
    ]
    (folder / "squeue.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


# --- synthetic cells ---------------------------------------------------------------------


@dataclass
class Synthetic:
    """What the cells of a study were made to say."""

    written: int = 0
    failed: int = 0
    diverged: int = 0
    stale: int = 0
    held: list[tuple[str, str, list[tuple[int, int]]]] = field(default_factory=list)


def write_cells(study_dir: Path, seed: int = 0) -> Synthetic:
    """One record per cell of the launch record, appended pack by pack (one append per
    task, by a process per core); the last NEW_CELLS cells are held back (`write_held`)."""
    from concurrent.futures import ProcessPoolExecutor

    from hpc.scheduling.records import read_records, task_pack
    from hpc.study.spec import load_study

    study = load_study(study_dir)
    out = Synthetic()
    jobs: list[tuple[str, str, list[tuple[int, int]]]] = []
    budget = NEW_CELLS
    tasks = [
        (r.id, k, a, i)
        for r in read_records(study)
        for k, a in enumerate(r.arrays)
        for i in range(len(a))
    ]
    for record_id, k, array, i in reversed(tasks):
        cells = list(array.task_cells(i))
        pack = task_pack(record_id, array.label, i)
        if budget > 0:
            take = min(budget, len(cells))
            out.held.append((array.dataset, pack, cells[-take:]))
            cells, budget = cells[:-take], budget - take
        if cells:
            jobs.append((array.dataset, pack, cells))
        log = study.layout.sbatch_logs() / f"{9000 + k}_{i}.out"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"anysweep: task of {array.label} ran its {len(cells)} cells\n")
    workers = max(1, min(os.cpu_count() or 1, 8))
    parts = [jobs[w::workers] for w in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        done = pool.map(
            _write_part, [study_dir] * workers, parts, [seed + w for w in range(workers)]
        )
        for part in done:
            for name in ("written", "failed", "diverged", "stale"):
                setattr(out, name, getattr(out, name) + getattr(part, name))
    return out


def _write_part(
    study_dir: Path, jobs: list[tuple[str, str, list[tuple[int, int]]]], seed: int
) -> Synthetic:
    from hpc.study.spec import load_study

    study = load_study(study_dir)
    maker = _Maker(study, np.random.default_rng(seed))
    out = Synthetic()
    for dataset, pack, cells in jobs:
        maker.append(study, dataset, pack, cells, out)
    return out


def write_held(study_dir: Path, synthetic: Synthetic, seed: int = 1) -> None:
    from hpc.study.spec import load_study

    study = load_study(study_dir)
    maker = _Maker(study, np.random.default_rng(seed + 100))
    for dataset, task, cells in synthetic.held:
        maker.append(study, dataset, task, cells, synthetic)


class _Maker:
    """Synthetic results of a study's cells, with what the study says they trained with."""

    def __init__(self, study: Any, rng: np.random.Generator) -> None:
        from hpc.study.population import read_population

        population = read_population(study)
        assert population is not None
        self.archs = population.archs
        self.rng = rng
        self.quality = np.random.default_rng(0).normal(size=len(self.archs))
        self.versions = json.dumps({"python": "3.11.7", "torch": "2.14.1", "anysweep": "0.1.0"})
        self._configs: dict[tuple[str, bool], tuple[str, str, bytes, dict[str, Any]]] = {}
        self._archs: dict[tuple[str, int, bool], tuple[bytes, str]] = {}

    def trained(self, study: Any, dataset: str, arch_id: int, stale: bool) -> Any:
        """What the cell trained with, as hpc.study.fingerprint.trained gives it (the
        dataset's part once per dataset, the architecture's once per architecture)."""
        from hpc.study import fingerprint
        from hpc.study.population import dataset_arch

        entry = study.dataset(dataset)
        if (dataset, stale) not in self._configs:
            recipe = entry.recipe.to_dict()
            if stale:
                recipe["epochs"] -= 1  # trained before the recipe was lengthened
            spec = entry.spec.to_dict()
            self._configs[(dataset, stale)] = (
                json.dumps(spec, sort_keys=True),
                json.dumps(recipe, sort_keys=True),
                fingerprint.config_digest(spec, recipe),
                fingerprint.in_values(spec, recipe),
            )
        spec_json, recipe_json, config, values = self._configs[(dataset, stale)]
        key = (dataset, arch_id, stale)
        if key not in self._archs:
            arch = dataset_arch(self.archs[arch_id], entry).to_dict()
            self._archs[key] = (
                fingerprint.arch_digest(arch),
                fingerprint.fingerprint_of(values, arch),
            )
        arch_digest, print_ = self._archs[key]
        return fingerprint.Trained(spec_json, recipe_json, config, arch_digest, print_)

    def append(
        self, study: Any, dataset: str, task: str, cells: list[tuple[int, int]], out: Synthetic
    ) -> None:
        from analysis.schema import CellResult
        from hpc.study import packs

        entries = []
        for arch_id, seed in cells:
            fate = self.rng.random()
            status = "failed" if fate < 0.01 else "diverged" if fate < 0.015 else "done"
            stale = dataset == "digits_k2_s0" and arch_id % 50 == 7
            made = self.trained(study, dataset, arch_id, stale)
            err = float(np.clip(30 - 8 * self.quality[arch_id] + self.rng.normal(0, 2), 0, 90))
            curve = err + (80 - err) * np.exp(-np.arange(10) / 2.5)
            result = CellResult(
                dataset=dataset,
                arch_id=arch_id,
                seed=seed,
                status=status,
                top1_err=err if status == "done" else float("nan"),
                top5_err=err / 4 if status == "done" else float("nan"),
                best_top1_err=err if status == "done" else float("nan"),
                best_epoch=9 if status == "done" else -1,
                epochs=10 if status == "done" else 3,
                diverged_epoch=3 if status == "diverged" else -1,
                train_seconds=float(600 + 60 * self.rng.random()),
                data_seconds=12.0,
                images_per_s=1500.0,
                peak_mem_bytes=3_000_000_000,
                flops=380_000_000,
                params=5_000_000,
                acts=4_000_000,
                error="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error: an illegal memory access"
                if status == "failed"
                else "",
                job_id=f"{9000 + arch_id // 100}_{arch_id % 100}",
                host=f"node{arch_id % 64:03d}",
                gpu="NVIDIA H100 80GB HBM3",
                versions=self.versions,
                recipe=made.recipe,
                started="2026-12-05T10:00:00+00:00",
                finished="2026-12-05T10:11:00+00:00",
                spec=made.spec,
                fingerprint=made.fingerprint,
                curves={
                    "train_loss": curve / 30,
                    "train_top1_err": curve * 0.9,
                    "test_top1_err": curve,
                    "test_top5_err": curve / 4,
                    "epoch_seconds": np.full(10, 61.0),
                    "data_seconds": np.full(10, 1.2),
                },
            )
            log = f"cell {dataset}/{arch_id}-s{seed} attempt 1/3\n" + "epoch ...\n" * 10
            entries.append(packs.Entry(result, log, made.config, made.arch))
            out.written += 1
            out.failed += status == "failed"
            out.diverged += status == "diverged"
            out.stale += stale
        packs.append(study.layout.pack(dataset, task), entries, sync=False)


# --- running verbs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    seconds: float
    peak_mb: float
    out: str
    code: int


def verb(study: Path, env: dict[str, str], *args: str, timeout: float = 3600) -> Ran:
    """`python -m hpc.cli VERB DIR ARGS` as a user runs it, under /usr/bin/time."""
    argv = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "hpc.cli", args[0], str(study)]
    try:
        done = subprocess.run(
            [*argv, *args[1:]], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return Ran(timeout, float("nan"), "", -1)
    seconds, kb = done.stderr.strip().splitlines()[-1].split()
    return Ran(float(seconds), int(kb) / 1024, done.stdout + done.stderr, done.returncode)


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def make_study(folder: Path, cells: int) -> Path:
    """The study of `cells` cells in `folder`, digits prepared; nothing sampled yet."""
    from hpc.study.datasets import prepare_datasets
    from hpc.study.spec import load_study

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "study.toml").write_text(study_toml(SIZES[cells]))
    prepare_datasets(load_study(folder), ["digits"], progress=False)
    return folder


def measure(cells: int, work: Path, analyze_timeout: float) -> dict[str, Any]:
    """Every figure of one size; the study is left in `work`."""
    study = make_study(work / f"study-{cells}", cells)
    env = fake_clients(work / f"bin-{cells}")
    figures: dict[str, Any] = {}
    peaks: dict[str, float] = {}

    def timed(name: str, *args: str, timeout: float = 3600) -> Ran:
        ran = verb(study, env, *args, timeout=timeout)
        assert ran.code == 0 or name == "analyze", f"{name}: {ran.out[-2000:]}"
        figures[name], peaks[name] = ran.seconds, ran.peak_mb
        print(
            f"  {cells:>7,} cells  {name:<45} {ran.seconds:8.1f} s  {ran.peak_mb:7.0f} MB",
            flush=True,
        )
        return ran

    timed("launch --dry-run", "launch", "--dry-run")
    timed("launch (sbatch: manifests, scripts, record)", "sbatch")
    figures["tasks"] = write_squeue(work / f"bin-{cells}", study)
    start = time.perf_counter()
    synthetic = write_cells(study)
    figures["writing the synthetic cells"] = time.perf_counter() - start
    calls = squeue_calls(work / f"bin-{cells}")
    timed("status, index cold", "status")
    figures["squeue calls per status"] = squeue_calls(work / f"bin-{cells}") - calls
    timed("status, index warm", "status")
    timed("collect from nothing", "collect")
    write_held(study, synthetic)
    collected = timed(f"collect after {NEW_CELLS:,} new cells", "collect")
    ran = timed("analyze", "analyze", timeout=analyze_timeout)
    figures["analyze finished"] = ran.code == 0
    timed("clean", "clean")
    finished = synthetic.written - synthetic.failed
    figures["results.h5 per cell"] = (study / "results.h5").stat().st_size / synthetic.written
    figures["files per finished cell after clean"] = count_files(study) / finished
    figures["peak memory of any verb"] = max(v for v in peaks.values() if v == v)
    figures["peaks"] = peaks
    figures["synthetic"] = synthetic
    figures["collect says"] = collected.out.strip().splitlines()[-1]
    return figures


def table(results: dict[int, dict[str, Any]]) -> str:
    sizes = sorted(results)
    head = "| figure | goal | " + " | ".join(f"{s:,} cells" for s in sizes) + " |"
    lines = [head, "|---|---|" + "---|" * len(sizes)]
    for name, (goal, unit) in GOALS.items():
        cells = []
        for size in sizes:
            value = results[size].get(name)
            if name == "analyze" and not results[size].get("analyze finished", True):
                cells.append(f"> {value:,.0f} s (stopped)")
            elif value is None:
                cells.append("-")
            else:
                cells.append(_show(value, unit))
        goal_text = f"< {_show(goal, unit)}" if unit in ("s", "B", "MB") else f"<= {goal}"
        lines.append(f"| {name} | {goal_text} | " + " | ".join(cells) + " |")
    extra = ("writing the synthetic cells", "tasks")
    for name in extra:
        values = [_show(results[s].get(name, 0), "s" if "writing" in name else "") for s in sizes]
        lines.append(f"| {name} | | " + " | ".join(values) + " |")
    return "\n".join(lines)


def _show(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:,.1f} s"
    if unit in ("B", "MB"):
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="6000,60000,600000", help="cells, comma-separated")
    parser.add_argument("--work", type=Path, default=None, help="folder to work in")
    parser.add_argument("--keep", action="store_true", help="keep the studies")
    parser.add_argument("--analyze-timeout", type=float, default=ANALYZE_TIMEOUT_S)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"sizes {unknown}; valid: {sorted(SIZES)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="anysweep-scale-"))
    started = time.monotonic()
    results = {}
    for cells in sizes:
        results[cells] = measure(cells, work, args.analyze_timeout)
        if not args.keep:
            shutil.rmtree(work / f"study-{cells}", ignore_errors=True)
    print()
    print(table(results))
    print(f"\nwall {time.monotonic() - started:,.0f} s; work folder {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
