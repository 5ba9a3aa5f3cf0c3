"""Time the analysis of a large study on one core: loading 100,000 cells (2,000 architectures
x 25 datasets x 2 seeds) plus the full Spearman matrix with 1,000-resample bootstrap
intervals (goal: under 10 s), and, for information, the other steps of `anysweep analyze`
(Kendall with the resample and permutation counts `analyze` gives it at this size) and,
with --full, the whole analysis and report.

With --scale, `anysweep analyze` as a user runs it (a process of its own: load results.h5,
Pearson and Spearman with intervals and p-values for every pair, Kendall against the
reference, the report) at 6,000, 60,000 and 600,000 cells (50, 500 and 5,000 architectures
x 40 datasets x 3 seeds), each against its goal: wall time < 300 s, peak memory < 4 GB,
report.html < 10 MB.

    .venv/bin/python benchmarks/analysis.py [--architectures 2000] [--full]
    .venv/bin/python benchmarks/analysis.py --scale [--sizes 50,500,5000]
"""

from __future__ import annotations

import os

# One core: set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.frame import open_results  # noqa: E402
from analysis.headline import kendall_permutations, kendall_resamples  # noqa: E402
from analysis.stats import correlate  # noqa: E402
from analysis.synthetic import SyntheticDataset, default_datasets, synthetic_results  # noqa: E402

GOAL_S = 10.0
SCALE_GOALS = {"wall_s": 300.0, "peak_gb": 4.0, "html_mb": 10.0}  # anysweep analyze, per size
ROOT = Path(__file__).resolve().parents[1]
# The child runs the real command in-process and reports its own peak memory (ru_maxrss, KB).
_CHILD = (
    "import json, resource, sys, time\n"
    "from hpc.cli import main\n"
    "cpu = time.process_time()\n"
    "code = main(sys.argv[1:])\n"
    "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print(json.dumps({'code': code, 'cpu_s': time.process_time() - cpu,"
    " 'peak_kb': usage.ru_maxrss}))\n"
)


def _datasets(count: int) -> list[SyntheticDataset]:
    base = default_datasets()
    extra = [
        SyntheticDataset(
            f"extra{i}",
            10,
            32,
            20_000,
            5_000,
            rho=float(np.sin(i)) * 0.9,
            small=0.2,
            base=20,
            spread=3,
            seed_noise=0.8,
        )
        for i in range(max(0, count - len(base)))
    ]
    return (base + extra)[:count]


class Clock:
    """Wall and CPU seconds of a block; CPU time shows the cost when the machine is shared."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        print(f"{self.label:<58} {self.wall:7.2f} s wall {self.cpu:7.2f} s cpu", flush=True)


def _analyze_once(path: Path, out: Path) -> dict[str, float]:
    """`anysweep analyze` on `path` in a fresh process: wall and CPU seconds, peak memory,
    the report's size, and the resample counts it printed (--json)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "analyze", str(path), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"anysweep analyze failed:\n{done.stderr[-3000:]}")
    *summary, usage = done.stdout.strip().splitlines()
    measured = json.loads(usage)
    printed = json.loads("\n".join(summary))
    return {
        "wall_s": wall,
        "cpu_s": measured["cpu_s"],
        "peak_gb": measured["peak_kb"] / 1e6,
        "html_mb": (out / "report.html").stat().st_size / 1e6,
        "headline_bootstrap": printed["headline_bootstrap"],
    }


def _scale(sizes: list[int], datasets: int, seeds: int) -> int:
    """The --scale table: one row per size, each figure against its goal."""
    rows = []
    for architectures in sizes:
        cells = architectures * datasets * seeds
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "results.h5"
            with Clock(f"write synthetic results.h5, {cells:,} cells (not part of the goal)"):
                synthetic_results(
                    path,
                    architectures=architectures,
                    seeds=seeds,
                    datasets=_datasets(datasets),
                    curves=True,
                    seed=0,
                )
            load = os.getloadavg()[0]
            row = _analyze_once(path, Path(tmp) / "report")
            row.update(cells=cells, architectures=architectures, load=load)
            row["load_after"] = os.getloadavg()[0]
            row["file_kb_per_cell"] = path.stat().st_size / cells / 1e3
        print(json.dumps(row), flush=True)
        rows.append(row)
    _print_scale(rows, datasets, seeds)
    return 0 if all(_meets(row) for row in rows) else 1


def _meets(row: dict[str, float]) -> bool:
    return all(row[key] < goal for key, goal in SCALE_GOALS.items())


def _print_scale(rows: list[dict[str, float]], datasets: int, seeds: int) -> None:
    print(
        f"\nanysweep analyze, architectures x {datasets} datasets x {seeds} seeds, one BLAS thread"
    )
    print(
        "| cells | architectures | wall (goal < 300 s) | CPU | peak memory (goal < 4 GB) "
        "| report.html (goal < 10 MB) | headline resamples | load (1 min, before/after) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['cells']:,} | {r['architectures']:,} | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s "
            f"| {r['peak_gb']:.2f} GB | {r['html_mb']:.2f} MB | {r['headline_bootstrap']:,} "
            f"| {r['load']:.1f} / {r['load_after']:.1f} |"
        )
    verdict = "meets" if all(_meets(r) for r in rows) else "MISSES"
    print(f"GOAL wall < 300 s, peak < 4 GB, report.html < 10 MB at every size: {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architectures", type=int, default=2000)
    parser.add_argument("--datasets", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--full", action="store_true", help="also time the whole analysis and report"
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="time `anysweep analyze` at --sizes architectures x 40 datasets x 3 seeds",
    )
    parser.add_argument(
        "--sizes",
        default="50,500,5000",
        help="architectures per --scale row (default 50,500,5000: 6,000 to 600,000 cells)",
    )
    args = parser.parse_args()
    if args.scale:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        return _scale(sizes, datasets=40, seeds=3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.h5"
        with Clock("write synthetic results.h5 (not part of the goal)"):
            synthetic_results(
                path,
                architectures=args.architectures,
                seeds=args.seeds,
                datasets=_datasets(args.datasets),
                curves=True,
                seed=0,
            )
        cells = args.architectures * args.datasets * args.seeds
        print(
            f"{cells:,} cells: {args.architectures} architectures x {args.datasets} datasets x {args.seeds} seeds"
        )
        with Clock("load results.h5 into the cells frame") as load:
            study = open_results(path)
            errors = study.errors()
        with Clock(f"Spearman matrix, {args.bootstrap} bootstrap resamples") as spearman:
            correlate(errors, method="spearman", bootstrap=args.bootstrap, permutations=0)
        total = load.wall + spearman.wall
        cpu = load.cpu + spearman.cpu
        verdict = "meets" if total < GOAL_S else "MISSES"
        print(
            f"GOAL load + Spearman matrix with intervals: {total:.2f} s wall, {cpu:.2f} s cpu "
            f"({verdict} the {GOAL_S:.0f} s goal)"
        )
        with Clock(f"  + {args.bootstrap} permutations for p-values"):
            correlate(
                errors, method="spearman", bootstrap=args.bootstrap, permutations=args.bootstrap
            )
        with Clock("Pearson matrix with intervals and p-values"):
            correlate(
                errors, method="pearson", bootstrap=args.bootstrap, permutations=args.bootstrap
            )
        reference = [(study.reference, d) for d in errors.columns if d != study.reference]
        resamples = kendall_resamples(len(errors), len(reference), args.bootstrap)
        permutations = kendall_permutations(len(errors), len(reference), args.bootstrap)
        with Clock(
            f"Kendall against the reference ({len(reference)} pairs, "
            f"{resamples} resamples, {permutations} permutations)"
        ):
            correlate(
                errors,
                method="kendall",
                pairs=reference,
                bootstrap=resamples,
                permutations=permutations,
            )
        if args.full:
            from analysis.report import analyze, write_report

            with Clock("whole analysis (anysweep analyze without output)"):
                analysis = analyze(study, bootstrap=args.bootstrap, permutations=args.bootstrap)
            print(
                f"  headline: {analysis.headline_bootstrap} resamples, Monte-Carlo error "
                f"{analysis.headline_mc_error:.4f}; tables: {analysis.mc_error:.4f}; "
                f"Kendall: {analysis.kendall_bootstrap} resamples, {analysis.kendall_mc_error:.4f}"
            )
            with Clock("tables, figures and report.html"):
                write_report(analysis, Path(tmp) / "report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
