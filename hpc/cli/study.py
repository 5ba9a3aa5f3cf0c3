"""The study verbs of `anysweep` (init, sample, prepare, launch, sbatch, status, collect, run,
cancel, clean, logs): argument parsers and thin handlers over hpc's functions.

Each handler returns the exit code; bad input raises ValueError or FileNotFoundError, which
`hpc.cli` prints as a one-line error. Heavy modules are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc.study.spec import STUDY_FILE, Study, load_study

if TYPE_CHECKING:
    from hpc.scheduling.launch import Launch

PRESETS_DIR = Path(__file__).resolve().parent.parent / "study" / "presets"
# How often `run` waits for cells that another launch had queued or running, then looks again.
WAIT_ROUNDS = 3


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def _scheduler_errors(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A scheduler that cannot be asked is an error to report, not a traceback (exit 1)."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from hpc.scheduling.status import SchedulerError

        try:
            return handler(args)
        except SchedulerError as exc:
            verb = handler.__name__.removeprefix("run_")
            print(f"anysweep {verb}: error: {exc}", file=sys.stderr)
            return 1

    return wrapped


def _study_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "study_dir", type=Path, metavar="DIR", help="the study folder (holds study.toml)"
    )


def _print(message: str = "") -> None:
    print(message, flush=True)


# --- init ---------------------------------------------------------------------------------


def add_init(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", type=Path, metavar="DIR", help="the study folder to create")
    parser.add_argument(
        "--preset", default="demo", help=f"one of {', '.join(preset_names())} (default: demo)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing study.toml")


def init_study(study_dir: Path, preset: str = "demo", force: bool = False) -> Path:
    """Write DIR/study.toml from a preset; returns its path."""
    source = PRESETS_DIR / f"{preset}.toml"
    if not source.is_file():
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(preset_names())}")
    target = Path(study_dir) / STUDY_FILE
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def run_init(args: argparse.Namespace) -> int:
    target = init_study(args.study_dir, args.preset, args.force)
    load_study(args.study_dir)  # a preset that does not validate is a bug; say so now
    _print(
        f"wrote {target} (preset {args.preset}); edit it, then `anysweep launch {args.study_dir} --dry-run`"
    )
    return 0


# --- sample, prepare ----------------------------------------------------------------------


def add_sample(parser: argparse.ArgumentParser) -> None:
    _study_dir(parser)


def run_sample(args: argparse.Namespace) -> int:
    from hpc.study.population import architectures_path, sample_architectures

    study = load_study(args.study_dir)
    population = sample_architectures(study, progress=True)
    _print(
        f"{len(population)} architectures in {architectures_path(study)} "
        f"(the study uses ids 0..{study.settings.architectures - 1})"
    )
    return 0


def add_prepare(parser: argparse.ArgumentParser) -> None:
    _study_dir(parser)
    parser.add_argument(
        "--dataset", action="append", metavar="NAME", help="only this dataset (repeatable)"
    )
    parser.add_argument(
        "--cluster",
        choices=("local", "slurm"),
        default="local",
        help="local (default), or slurm: one job per dataset, for ImageNet-size data",
    )


def prepare_on_slurm(study: Study, names: list[str] | None = None) -> list[str]:
    """Submit one Slurm job per dataset to prepare (subsets through their parents); job ids."""
    import submitit

    from hpc.study.population import prepare_one

    entries = [study.dataset(n) for n in names] if names else list(study.datasets)
    specs: dict[str, Any] = {}
    for entry in entries:
        spec = entry.spec.parent_spec() if entry.spec.is_subset else entry.spec
        specs.setdefault(spec.name, (spec, entry.cluster))
    ids = []
    for spec, cluster in specs.values():
        executor = submitit.AutoExecutor(folder=study.root / "jobs" / "prepare", cluster="slurm")
        params = {
            "name": f"anysweep-prepare-{spec.name}",
            "timeout_min": cluster.time_min,
            "cpus_per_task": cluster.cpus,
            "mem_gb": cluster.mem_gb,
        }
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(cluster, key):
                params[f"slurm_{key}"] = getattr(cluster, key)
        if cluster.setup:
            params["slurm_setup"] = list(cluster.setup)
        executor.update_parameters(**params)
        ids.append(executor.submit(prepare_one, spec.to_dict(), str(study.data_dir)).job_id)
    return ids


def run_prepare(args: argparse.Namespace) -> int:
    from hpc.study.population import prepare_datasets

    study = load_study(args.study_dir)
    if args.cluster == "slurm":
        ids = prepare_on_slurm(study, args.dataset)
        _print(
            f"submitted {len(ids)} prepare job(s): {', '.join(ids)}; "
            f"logs in {study.root / 'jobs' / 'prepare'}"
        )
        return 0
    prepared = prepare_datasets(study, args.dataset, progress=True)
    for item in prepared:
        _print(
            f"{item.spec.name}: {item.num_train:,} train / {item.num_test:,} test images, "
            f"{item.num_classes} classes, {item.backend} backend"
        )
    return 0


# --- launch, sbatch -----------------------------------------------------------------------


def add_launch(parser: argparse.ArgumentParser) -> None:
    _study_dir(parser)
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


@_scheduler_errors
def run_launch(args: argparse.Namespace) -> int:
    from hpc.scheduling.launch import launch
    from hpc.scheduling.plan import format_plan

    study = load_study(args.study_dir)
    launched = launch(
        study,
        cluster=args.cluster,
        jobs=args.jobs,
        dry_run=args.dry_run,
        reset_retries=args.reset_retries,
    )
    _print(format_plan(launched.plan, study))
    if args.dry_run:
        _print("dry run: nothing submitted")
    elif not launched.record:
        _print("nothing to submit: every cell is finished, queued or running")
    else:
        what = (
            f"started {len(launched.job_ids)} local workers (pids"
            if args.cluster == "local"
            else f"submitted {len(launched.job_ids)} array jobs (ids"
        )
        _print(
            f"{what} {', '.join(launched.job_ids)}); recorded in "
            f"{study.root / 'jobs' / launched.record}; follow with `anysweep status {study.root}`"
        )
    return 0


def add_sbatch(parser: argparse.ArgumentParser) -> None:
    _study_dir(parser)


@_scheduler_errors
def run_sbatch(args: argparse.Namespace) -> int:
    from hpc.scheduling.plan import format_plan
    from hpc.scheduling.schedulers.sbatch import render

    study = load_study(args.study_dir)
    rendered = render(study)
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
    _study_dir(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


@_scheduler_errors
def run_status(args: argparse.Namespace) -> int:
    from hpc.scheduling.status import format_status, study_status

    status = study_status(load_study(args.study_dir))
    _print(json.dumps(status.to_dict(), indent=1) if args.json else format_status(status))
    return 0


def add_collect(parser: argparse.ArgumentParser) -> None:
    _study_dir(parser)


def run_collect(args: argparse.Namespace) -> int:
    from hpc.study.collect import collect

    collected = collect(load_study(args.study_dir), progress=True)
    for line in collected.skipped:
        print(f"skipped {line}", file=sys.stderr)
    state = "wrote" if collected.written else "up to date:"
    _print(
        f"{state} {collected.path} ({collected.cells} cells"
        + (f", {len(collected.skipped)} unreadable files skipped)" if collected.skipped else ")")
    )
    return 0


# --- run ----------------------------------------------------------------------------------


def add_run(parser: argparse.ArgumentParser) -> None:
    _study_dir(parser)
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


def add_poll(parser: argparse.ArgumentParser) -> None:
    """--poll, for the verbs that wait on their jobs (run, demo)."""
    parser.add_argument(
        "--poll",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds between two looks at the jobs (default: 1 local, 15 slurm)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


@_scheduler_errors
def run_run(args: argparse.Namespace) -> int:
    return run_study(
        args.study_dir,
        cluster=args.cluster,
        jobs=args.jobs,
        analyze=not args.no_analyze,
        poll_s=args.poll,
    )


def run_study(
    study_dir: Path | str,
    cluster: str = "local",
    jobs: int | None = None,
    progress: bool = True,
    analyze: bool = True,
    poll_s: float | None = None,
) -> int:
    """sample, prepare, launch, wait (with a progress bar), collect, analyze: the whole study.

    Interrupted (Ctrl-C) and run again, it continues where it stopped. Failed cells are
    launched again while they have attempts left. Returns 0 when every cell finished as
    done or diverged, 1 when some failed.
    """
    from hpc.scheduling.launch import cancel_lanes, launch
    from hpc.study.collect import collect
    from hpc.study.population import prepare_datasets, sample_architectures

    study = load_study(study_dir)
    poll_s = poll_s if poll_s is not None else (1.0 if cluster == "local" else 15.0)
    sample_architectures(study, progress=progress)
    prepare_datasets(study, progress=progress)
    rounds = waits = 0  # launches that submitted cells; looks at cells run elsewhere
    with _CtrlC() as ctrl_c:
        while rounds <= study.settings.max_attempts and waits <= WAIT_ROUNDS:
            since = time.time()
            launched = launch(study, cluster=cluster, jobs=jobs)
            try:
                _wait(study, launched, since, poll_s, progress, ctrl_c.check)
            except BaseException:
                # Ctrl-C or an error: the local workers end with the command that started
                # them (their cells resume next time); Slurm jobs run on.
                cancel_lanes(launched)
                raise
            if launched.record:
                rounds += 1
            elif launched.plan.active:
                waits += 1  # cells queued or running elsewhere ended: launch what they left
            else:
                break
    collected = collect(study, progress=progress)
    for line in collected.skipped:
        print(f"skipped {line}", file=sys.stderr)
    _print(f"results: {collected.path} ({collected.cells} cells)")
    if analyze:
        _analyze(study.root)
    return _outcome(study)


class _CtrlC:
    """Remembers Ctrl-C, so that one swallowed by library code (h5py's weak-reference
    callbacks print "Exception ignored" and go on) is raised at the next `check`."""

    def __init__(self) -> None:
        self.hit = False
        self._previous: Any = None

    def __enter__(self) -> _CtrlC:
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self.hit = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.hit:
            raise KeyboardInterrupt


def _wait(
    study: Study,
    launched: Launch,
    since: float,
    poll_s: float,
    progress: bool,
    check: Callable[[], None] = lambda: None,
) -> None:
    """Until no task of the study is queued or running, or every cell this launch submitted
    has a new result (its workers may still be exiting); the bar counts finished cells.
    `check` is called at every look (it raises to stop the waiting)."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    from hpc.scheduling.launch import lanes_running
    from hpc.scheduling.status import tasks
    from hpc.study.results import is_finished, scan_results, study_cells

    cells = study_cells(study)
    attempts = study.settings.max_attempts
    submitted = list(launched.plan.missing) if launched.record else []
    results = scan_results(study)
    with tqdm(
        total=len(cells),
        initial=sum(is_finished(results.get(c), attempts) for c in cells),
        desc=study.name,
        unit="cell",
        disable=not progress,
        smoothing=0.1,
    ) as bar:
        while True:
            results = scan_results(study)
            check()
            bar.update(sum(is_finished(results.get(c), attempts) for c in cells) - bar.n)
            if submitted and all(c in results and results[c].mtime >= since for c in submitted):
                break
            lanes_running(launched)  # reaps this process's lanes that ended
            if not any(t.state != "ended" for t in tasks(study)):
                break
            check()
            time.sleep(poll_s)


def _analyze(root: Path) -> None:
    import importlib

    try:
        module = importlib.import_module("analysis.cli")
    except ModuleNotFoundError:
        print(
            "anysweep run: analysis is not installed here; skipped `anysweep analyze`",
            file=sys.stderr,
        )
        return
    parser = argparse.ArgumentParser(prog="anysweep analyze")
    module.add_arguments(parser)
    module.run(parser.parse_args([str(root)]))


def _outcome(study: Study) -> int:
    from hpc.study.results import scan_results, study_cells

    results = scan_results(study)
    bad = [
        c.key
        for c in study_cells(study)
        if results.get(c) is None or results[c].status not in ("done", "diverged")
    ]
    if bad:
        print(
            f"anysweep run: {len(bad)} cell(s) did not finish: {', '.join(bad[:10])}"
            + (" ..." if len(bad) > 10 else "")
            + f"; see `anysweep status {study.root}`",
            file=sys.stderr,
        )
        return 1
    return 0


# --- cancel, clean, logs ------------------------------------------------------------------


def add_cancel(parser: argparse.ArgumentParser) -> None:
    _study_dir(parser)


@_scheduler_errors
def run_cancel(args: argparse.Namespace) -> int:
    from hpc.scheduling.launch import cancel

    cancelled = cancel(load_study(args.study_dir))
    _print(f"cancelled {', '.join(cancelled)}" if cancelled else "nothing queued or running")
    return 0


def add_clean(parser: argparse.ArgumentParser) -> None:
    _study_dir(parser)
    parser.add_argument(
        "--betons",
        action="store_true",
        help="also delete the prepared files of datasets whose cells all finished",
    )


def run_clean(args: argparse.Namespace) -> int:
    from hpc.study.collect import clean

    removed, freed = clean(load_study(args.study_dir), betons=args.betons)
    _print(f"removed {len(removed)} file(s), {freed / 2**20:,.1f} MiB")
    return 0


def add_logs(parser: argparse.ArgumentParser) -> None:
    _study_dir(parser)
    parser.add_argument("cell", metavar="CELL", help="DATASET/ARCH-sSEED, e.g. fashion_mnist/3-s0")
    parser.add_argument(
        "--lines", type=int, default=40, help="lines of the task's scheduler log (default 40)"
    )


@_scheduler_errors
def run_logs(args: argparse.Namespace) -> int:
    from hpc.scheduling.status import cell_logs

    cell_log, task_log = cell_logs(load_study(args.study_dir), args.cell)
    if cell_log is not None:
        _print(f"==> {cell_log} <==")
        _print(cell_log.read_text(errors="replace").rstrip())
    if task_log is not None:
        lines = task_log.read_text(errors="replace").splitlines()[-args.lines :]
        _print(f"==> {task_log} (last {len(lines)} lines) <==")
        _print("\n".join(lines))
    if cell_log is None and task_log is None:
        _print(f"no log of {args.cell} yet: it has not started")
    return 0
