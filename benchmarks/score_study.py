"""Time `anysweep score` on the demo study (hpc/study/presets/demo.toml): every score of
every (architecture, dataset, seed) with local lanes, one torch thread each, as `anysweep
run` and the demo compute them before training. Prints the wall time, the CPU time of the
lanes (start-up included: on a shared machine the wall time says more about the other work
than about the scores; CPU time / lanes is the wall time on idle cores), the networks scored
and the CPU seconds per network, for one seed and for the preset's two (the second seed's
cost is what the seed-to-seed agreement costs).

    .venv/bin/python benchmarks/score_study.py [--dir /tmp/score-bench] [--jobs 2]

The demo's data is prepared once in DIR/prepared and copied for each timing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpc.scheduling.scores import score_study  # noqa: E402
from hpc.study.datasets import prepare_datasets  # noqa: E402
from hpc.study.population import sample_architectures  # noqa: E402
from hpc.study.presets import init_study  # noqa: E402
from hpc.study.spec import load_study  # noqa: E402


def prepared(root: Path) -> Path:
    """The demo study, sampled and prepared, in root/prepared (kept between runs)."""
    folder = root / "prepared"
    if not (folder / "study.toml").exists():
        init_study(folder, preset="demo")
    study = load_study(folder)
    sample_architectures(study)
    prepare_datasets(study, progress=False)
    return folder


def _children_cpu() -> float:
    """CPU seconds of this process's ended children and their descendants (the lanes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(source: Path, target: Path, seeds: int, jobs: int) -> tuple[float, float, int]:
    """Wall and lane CPU seconds and networks of one `score` of a fresh copy of the study
    with `seeds` seeds."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("scores", "jobs"))
    toml = target / "study.toml"
    toml.write_text(toml.read_text().replace("seeds = 2", f"seeds = {seeds}"))
    study = load_study(target)
    start, cpu = time.perf_counter(), _children_cpu()
    run = score_study(study, jobs=jobs, progress=False)
    seconds = time.perf_counter() - start
    if run.unscored:
        raise SystemExit(f"not every network was scored: {run.unscored}")
    return seconds, _children_cpu() - cpu, run.scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/anysweep-score-bench"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    source = prepared(args.dir)
    print(f"the demo study, {args.jobs} lanes; load average {os.getloadavg()[0]:.1f}")
    for seeds in (1, 2):
        seconds, cpu, networks = timed(source, args.dir / f"seeds{seeds}", seeds, args.jobs)
        print(
            f"  {seeds} seed(s): {networks} networks in {seconds:.1f} s wall, "
            f"{cpu:.1f} s CPU of the lanes ({cpu / args.jobs:.1f} s on {args.jobs} idle cores), "
            f"{cpu / networks:.3f} CPU s per network; load average after "
            f"{os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
