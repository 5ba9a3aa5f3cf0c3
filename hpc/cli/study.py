"""The study verbs of `anysweep` (init, sample, prepare, score, launch, sbatch, status, collect,
run, cancel, clean, logs): argument parsers and thin handlers over hpc's functions.

Each handler returns the exit code; bad input raises ValueError or FileNotFoundError, which
`hpc.cli` prints as a one-line error. Heavy modules are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

from hpc.cli.options import add_poll, add_study_dir
from hpc.study.presets import init_study, preset_names
from hpc.study.spec import load_study


def _scheduler_errors(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A scheduler that cannot be asked is an error to report, not a traceback (exit 1)."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from hpc.scheduling.schedulers import SchedulerError

        try:
            return handler(args)
        except SchedulerError as exc:
            verb = handler.__name__.removeprefix("run_")
            print(f"anysweep {verb}: error: {exc}", file=sys.stderr)
            return 1

    return wrapped


def _print(message: str = "") -> None:
    print(message, flush=True)


# --- init ---------------------------------------------------------------------------------


def add_init(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", type=Path, metavar="DIR", help="the study folder to create")
    parser.add_argument(
        "--preset", default="demo", help=f"one of {', '.join(preset_names())} (default: demo)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing study.toml")


def run_init(args: argparse.Namespace) -> int:
    target = init_study(args.study_dir, args.preset, args.force)
    load_study(args.study_dir)  # a preset that does not validate is a bug; say so now
    folder = args.study_dir
    _print(
        f"wrote {target} (preset {args.preset}); edit it, then `anysweep run {folder}` to run it "
        f"on this machine, or on a Slurm cluster `anysweep launch {folder} --dry-run` to see "
        f"the plan and `anysweep launch {folder}` to submit it"
    )
    return 0


# --- sample, prepare ----------------------------------------------------------------------


def add_sample(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)


def run_sample(args: argparse.Namespace) -> int:
    from hpc.study.population import sample_architectures

    study = load_study(args.study_dir)
    population = sample_architectures(study, progress=True)
    _print(
        f"{len(population)} architectures in {study.layout.architectures} "
        f"(the study uses ids 0..{study.settings.architectures - 1})"
    )
    return 0


def add_prepare(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)
    parser.add_argument(
        "--dataset", action="append", metavar="NAME", help="only this dataset (repeatable)"
    )
    parser.add_argument(
        "--cluster",
        choices=("local", "slurm"),
        default="local",
        help="local (default), or slurm: one job per dataset, for ImageNet-size data",
    )


def run_prepare(args: argparse.Namespace) -> int:
    from hpc.study.datasets import prepare_datasets

    study = load_study(args.study_dir)
    if args.cluster == "slurm":
        from hpc.scheduling.schedulers.slurm import submit_prepare

        ids = submit_prepare(study, args.dataset)
        _print(
            f"submitted {len(ids)} prepare job(s): {', '.join(ids)}; "
            f"logs in {study.layout.prepare_jobs}"
        )
        return 0
    prepared = prepare_datasets(study, args.dataset, progress=True)
    for item in prepared:
        _print(
            f"{item.spec.name}: {item.num_train:,} train / {item.num_test:,} test images, "
            f"{item.num_classes} classes, {item.backend} backend"
        )
    return 0


# --- score --------------------------------------------------------------------------------


def add_score(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)
    parser.add_argument(
        "--dataset", action="append", metavar="NAME", help="only this dataset (repeatable)"
    )
    parser.add_argument(
        "--cluster",
        choices=("local", "slurm"),
        default="local",
        help="local (default): one process per core, waited for; slurm: one array job "
        "per dataset, submitted (like prepare)",
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="local: processes at once (default: cores)"
    )


@_scheduler_errors
def run_score(args: argparse.Namespace) -> int:
    from hpc.scheduling.scores import score_study, summary

    study = load_study(args.study_dir)
    run = score_study(
        study,
        cluster=args.cluster,
        jobs=args.jobs,
        names=args.dataset,
        wait=args.cluster == "local",
    )
    _print(summary(run, study))
    return 1 if run.unscored else 0


# --- launch, sbatch -----------------------------------------------------------------------


def add_launch(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)
    parser.add_argument(
        "--cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="slurm (default): array jobs; local: workers on this machine",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="local: workers at once (default: the number of cores)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan; submit nothing")
    parser.add_argument(
        "--reset-retries",
        action="store_true",
        help="run failed cells again even if they used up their attempts",
    )
    add_retrain_stale(parser)


def add_retrain_stale(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retrain-stale",
        action="store_true",
        help="train again the cells study.toml no longer describes (their results are kept "
        "under jobs/stale/); without it, launch and run refuse while such cells exist",
    )


@_scheduler_errors
def run_launch(args: argparse.Namespace) -> int:
    from hpc.scheduling import schedulers
    from hpc.scheduling.launch import launch
    from hpc.scheduling.plan import format_plan

    study = load_study(args.study_dir)
    launched = launch(
        study,
        cluster=args.cluster,
        jobs=args.jobs,
        dry_run=args.dry_run,
        reset_retries=args.reset_retries,
        retrain_stale=args.retrain_stale,
    )
    _print(format_plan(launched.plan, study))
    if launched.problems:
        print(f"anysweep launch: error: {'; '.join(launched.problems)}", file=sys.stderr)
        return 2
    if args.dry_run:
        _print("dry run: nothing submitted")
    elif not launched.record:
        _print("nothing to submit: every cell is finished, queued or running")
    else:
        ids = launched.job_ids
        what = schedulers.get(args.cluster).summary.format(n=len(ids), ids=", ".join(ids))
        _print(
            f"{what}; recorded in {study.layout.record_dir(launched.record)}; "
            f"follow with `anysweep status {study.root}`"
        )
    return 0


def add_sbatch(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)


@_scheduler_errors
def run_sbatch(args: argparse.Namespace) -> int:
    from hpc.scheduling.plan import format_plan
    from hpc.scheduling.schedulers.sbatch import render_scripts

    study = load_study(args.study_dir)
    rendered = render_scripts(study)
    _print(format_plan(rendered.plan, study))
    if rendered.submit is None:
        _print("nothing to render: every cell is finished, queued or running")
        return 0
    for script in rendered.scripts:
        _print(f"  {script}")
    _print(f"submit them all with: bash {rendered.submit}")
    return 0


# --- status, collect ----------------------------------------------------------------------


def add_status(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--limit",
        type=int,
        default=20,
        metavar="N",
        help="failed and stale cells listed by name, the rest counted (default 20; 0: all)",
    )


@_scheduler_errors
def run_status(args: argparse.Namespace) -> int:
    from hpc.scheduling.status import format_status, study_status

    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0 (0 lists every cell), got {args.limit}")
    status = study_status(load_study(args.study_dir), limit=args.limit)
    _print(json.dumps(status.to_dict(), indent=1) if args.json else format_status(status))
    return 0


def add_collect(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)


def run_collect(args: argparse.Namespace) -> int:
    from hpc.study.collect import collect

    collected = collect(load_study(args.study_dir), progress=True)
    for line in collected.skipped:
        print(f"skipped {line}", file=sys.stderr)
    state = "wrote" if collected.written else "up to date:"
    details = [f"{collected.cells:,} cells"]
    if collected.written:
        kept = collected.cells + collected.stale - collected.read
        details.append(
            f"{collected.read:,} records read"
            + (f", {kept:,} kept from the last collect" if kept > 0 else "")
        )
    if collected.stale:
        details.append(f"{collected.stale:,} stale cells kept apart in /stale")
    if collected.skipped:
        details.append(f"{len(collected.skipped)} unreadable records skipped")
    _print(f"{state} {collected.path} ({', '.join(details)})")
    return 0


# --- run ----------------------------------------------------------------------------------


def add_run(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)
    parser.add_argument(
        "--cluster",
        choices=("local", "slurm"),
        default="local",
        help="local (default): on this machine; slurm: array jobs, waited for",
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="local: workers at once (default: cores)"
    )
    parser.add_argument("--no-analyze", action="store_true", help="stop after collect")
    add_poll(parser)
    add_retrain_stale(parser)


@_scheduler_errors
def run_run(args: argparse.Namespace) -> int:
    from hpc.scheduling.run import run_study

    return run_study(
        args.study_dir,
        cluster=args.cluster,
        jobs=args.jobs,
        analyze=not args.no_analyze,
        poll_s=args.poll,
        retrain_stale=args.retrain_stale,
    )


# --- cancel, clean, logs ------------------------------------------------------------------


def add_cancel(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)


@_scheduler_errors
def run_cancel(args: argparse.Namespace) -> int:
    from hpc.scheduling.launch import cancel

    cancelled = cancel(load_study(args.study_dir))
    _print(f"cancelled {', '.join(cancelled)}" if cancelled else "nothing queued or running")
    return 0


def add_clean(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)
    parser.add_argument(
        "--betons",
        action="store_true",
        help="also delete the prepared files of datasets whose cells all finished",
    )


def run_clean(args: argparse.Namespace) -> int:
    from hpc.study.clean import clean

    removed, freed = clean(load_study(args.study_dir), betons=args.betons)
    _print(f"removed {len(removed)} file(s), {freed / 2**20:,.1f} MiB")
    return 0


def add_logs(parser: argparse.ArgumentParser) -> None:
    add_study_dir(parser)
    parser.add_argument("cell", metavar="CELL", help="DATASET/ARCH-sSEED, e.g. fashion_mnist/3-s0")
    parser.add_argument(
        "--lines", type=int, default=40, help="lines of the task's scheduler log (default 40)"
    )


@_scheduler_errors
def run_logs(args: argparse.Namespace) -> int:
    from hpc.scheduling.status import cell_logs

    logs = cell_logs(load_study(args.study_dir), args.cell)
    for number, text in enumerate(logs.records, 1):
        _print(f"==> {args.cell}: record {number} of {len(logs.records)} <==")
        _print(text.rstrip())
    if logs.live is not None:
        _print(f"==> {logs.live} (running) <==")
        _print(logs.live.read_text(errors="replace").rstrip())
    if logs.task_log is not None:
        lines = logs.task_log.read_text(errors="replace").splitlines()[-args.lines :]
        _print(f"==> {logs.task_log} (last {len(lines)} lines) <==")
        _print("\n".join(lines))
    if not logs.records and logs.live is None and logs.task_log is None:
        _print(f"no log of {args.cell} yet: it has not started")
    return 0
