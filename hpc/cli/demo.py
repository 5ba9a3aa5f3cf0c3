"""`anysweep demo`: the paper's study in miniature on real offline data, on this machine.

It writes the `demo` preset's study.toml (unless the folder already holds a study, which
it then continues), runs it with every core, and ends with the answer as a short table.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from hpc.cli.options import add_poll
from hpc.study.layout import StudyLayout

DEFAULT_DIR = "anysweep-demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "study_dir",
        metavar="DIR",
        nargs="?",
        default=DEFAULT_DIR,
        help=f"the study folder (default ./{DEFAULT_DIR}); an existing study "
        "there is continued, not replaced",
    )
    parser.add_argument(
        "--cluster",
        choices=("local", "slurm"),
        default="local",
        help="local (default): this machine's cores; slurm: array jobs on the "
        "cluster SLURM_CONF points at",
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="local: trainings at once (default: every core)"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples per interval (default 1000)",
    )
    add_poll(parser)


def run(args: argparse.Namespace) -> int:
    from hpc.scheduling import schedulers
    from hpc.scheduling.run import run_study
    from hpc.study.presets import init_study

    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    schedulers.get(args.cluster).check_ready()
    root = Path(args.study_dir)
    layout = StudyLayout.at(root)
    if layout.study_file.exists():
        print(f"continuing the study in {root} (delete the folder to start afresh)")
    else:
        init_study(root, preset="demo")
    started = time.monotonic()
    status = run_study(
        root, cluster=args.cluster, jobs=args.jobs, progress=True, analyze=False, poll_s=args.poll
    )
    trained = time.monotonic() - started
    report = summarize(root, bootstrap=args.bootstrap)
    print(report)
    print(
        f"\nstudy: {root}   wall time: {trained / 60:.1f} min   "
        f"report: {layout.report / 'report.html'}"
    )
    return status


def _fmt(r: float, lo: float, hi: float) -> str:
    if not math.isfinite(r):
        return "n/a"
    return f"{r:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def summarize(root: Path, *, bootstrap: int = 1000) -> str:
    """Analyze results.h5, write the report, and return the demo's closing table."""
    from analysis.frame import open_results
    from analysis.report import analyze, write_report
    from analysis.summary import summary_text

    study = open_results(root / "results.h5")
    analysis = analyze(study, bootstrap=bootstrap, permutations=bootstrap, progress=False)
    write_report(analysis, root / "report")
    return summary_text(analysis)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="anysweep demo")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
