"""The chunk worker: runs a manifest's cells in order, one result file per finished cell.

Reachable as `hpc.worker.Chunk(manifest)` (submitit, requeued on SIGUSR2),
`python -m hpc.worker MANIFEST` or `python -m hpc.worker --array DIR --task-id N` (sbatch).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
import torch
from submitit.core.utils import UncompletedJobError
from tqdm import tqdm  # type: ignore[import-untyped]

from analysis.schema import STATUSES, CellResult, CorruptResultError, read_cell, write_cell
from hpc.scheduling.manifest import CellSpec, Manifest, read_manifest
from hpc.scheduling.schedulers.slurm import requeue_this_job
from hpc.study.layout import CellPaths, StudyLayout, cell_stem
from hpc.study.results import is_final, is_finished
from hpc.worker import provenance
from hpc.worker.cohort import train_cohort
from hpc.worker.train import CellInterrupted, CellRun, TrainOutcome, cell_seed, train_cell

# Exit codes of `python -m hpc.worker`.
EXIT_DONE, EXIT_SOME_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 3

# A result file the system would not let us read is asked this many times, this far apart.
PREVIOUS_TRIES, PREVIOUS_RETRY_S = 5, 1.0

# Set by the SIGUSR2 handler of `main`; polled by the trainer after every step.
_stop = threading.Event()


@dataclass
class _Loaders:
    """A dataset's loaders, built once per process and reused by every cell that trains on it."""

    key: str
    train: Any
    test: Any
    num_classes: int
    resolution: int


_loader_cache: dict[str, _Loaders] = {}


def _loaders(manifest: Manifest, device: str) -> _Loaders:
    from loaders.pipelines import build_loaders
    from loaders.prepare import open_prepared
    from loaders.registry import DatasetSpec

    recipe = manifest.recipe
    key = repr(
        (
            sorted(manifest.dataset.items()),
            recipe.batch_size,
            recipe.test_batch_size,
            recipe.resolution,
            recipe.num_workers,
            recipe.augment,
            device,
            str(manifest.data_dir),
        )
    )
    if key not in _loader_cache:
        _loader_cache.clear()  # one dataset at a time: the previous one's memory goes
        spec = DatasetSpec.from_dict(manifest.dataset)
        prepared = open_prepared(spec, manifest.data_dir)
        resolution = recipe.resolution or spec.resolution
        train, test = build_loaders(
            prepared,
            batch_size=recipe.batch_size,
            test_batch_size=recipe.test_batch_size,
            resolution=resolution,
            device=device,
            num_workers=recipe.num_workers,
            augment=recipe.augment,
        )
        _loader_cache[key] = _Loaders(key, train, test, prepared.num_classes, resolution)
    return _loader_cache[key]


def _layout(manifest: Manifest) -> StudyLayout:
    return StudyLayout(manifest.study_dir, manifest.data_dir)


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA device")
    return device


def _previous(path: Path, tries: int = PREVIOUS_TRIES) -> CellResult | None:
    """The cell's existing result; a corrupt one (never written by write_cell) is ignored.

    A file the system will not let us read (another process's lock, an I/O error) is asked
    again a few times, then the error is raised: retraining a cell that may be finished,
    and overwriting its result, would be worse than stopping the chunk."""
    attempt = 1
    while True:
        if not path.exists():
            return None
        try:
            return read_cell(path)
        except CorruptResultError:
            return None
        except OSError:  # gone since the check is seen at the next look
            if attempt >= tries:
                raise
        attempt += 1
        time.sleep(PREVIOUS_RETRY_S)


class _CellLog:
    """A cell's log file, appended to by every run of the cell, one timestamped line each."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", buffering=1)

    def __call__(self, message: str) -> None:
        self._handle.write(f"{provenance.now()} {message}\n")

    def close(self) -> None:
        self._handle.close()


def _result(
    manifest: Manifest,
    cell: CellSpec,
    *,
    status: str,
    attempts: int,
    started: str,
    device: str,
    outcome: TrainOutcome | None = None,
    complexity: Any = None,
    error: str = "",
) -> CellResult:
    fields: dict[str, Any] = {}
    if outcome is not None:
        fields = {
            name: getattr(outcome, name)
            for name in (
                "top1_err",
                "top5_err",
                "best_top1_err",
                "best_epoch",
                "epochs",
                "diverged_epoch",
                "data_seconds",
                "images_per_s",
                "peak_mem_bytes",
            )
        }
        fields["train_seconds"] = outcome.wall_seconds
        fields["curves"] = outcome.curves
    if complexity is not None:
        fields.update(flops=complexity.flops, params=complexity.params, acts=complexity.acts)
    return CellResult(
        dataset=manifest.dataset_name,
        arch_id=cell.arch_id,
        seed=cell.seed,
        status=status,
        attempts=attempts,
        error=error,
        job_id=provenance.job_id(),
        host=provenance.host(),
        gpu=provenance.device_name(device),
        versions=provenance.versions_json(),
        recipe=manifest.recipe.to_json(),
        started=started,
        finished=provenance.now(),
        **fields,
    )


def interruption(exc: BaseException) -> BaseException | None:
    """The interruption (Ctrl-C, SIGINT from a scheduler, exit, a stop request, submitit's
    USR2 handler giving up on a requeue) that `exc` is or was raised while handling, if any:
    cleanup code can replace the one with the other."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(
            current, (KeyboardInterrupt, SystemExit, CellInterrupted, UncompletedJobError)
        ):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _summary(outcome: TrainOutcome) -> str:
    if outcome.status == "diverged":
        return f"diverged in epoch {outcome.diverged_epoch + 1} (loss NaN/inf)"
    return (
        f"done: test err {outcome.top1_err:.2f}% (best {outcome.best_top1_err:.2f}% at epoch "
        f"{outcome.best_epoch + 1}), {outcome.images_per_s:.0f} images/s"
    )


def _attempt(
    manifest: Manifest,
    cell: CellSpec,
    attempts: int,
    device: str,
    paths: CellPaths,
    log: _CellLog,
    stop_flag: Callable[[], bool] | None,
    timings: dict[str, float],
) -> CellResult:
    """Train the cell; any exception but an interruption becomes a failed result."""
    from anynet.arch import Architecture
    from anynet.complexity import complexity

    name = manifest.dataset_name
    started = provenance.now()
    counts = None
    try:
        arch = Architecture.from_dict(cell.arch)
        log(f"architecture {arch.name}")
        loaders_start = time.perf_counter()
        data = _loaders(manifest, device)
        timings["loaders"] = timings.get("loaders", 0.0) + time.perf_counter() - loaders_start
        counts = complexity(arch, resolution=data.resolution, num_classes=data.num_classes)
        if manifest.threads:
            torch.set_num_threads(manifest.threads)
        outcome = train_cell(
            arch,
            data.train,
            data.test,
            manifest.recipe,
            seed=cell.seed,
            init_seed=cell_seed(name, cell.arch_id, cell.seed),
            num_classes=data.num_classes,
            device=device,
            checkpoint_path=paths.checkpoint,
            log=log,
            stop_flag=stop_flag,
        )
    except CellInterrupted:
        raise
    except Exception as exc:
        stop = interruption(exc)
        if stop is not None:
            # A library's cleanup raised while a signal unwound it (torch.save's zip writer
            # does): the cell was stopped, not failed, and keeps its attempt.
            raise stop from None
        return _failed(manifest, cell, attempts, started, device, counts, log, exc)
    return _finished(manifest, cell, attempts, started, device, counts, log, outcome, timings)


def _failed(
    manifest: Manifest,
    cell: CellSpec,
    attempts: int,
    started: str,
    device: str,
    counts: Any,
    log: _CellLog,
    exc: BaseException,
) -> CellResult:
    """The failed result of an attempt that raised `exc`, its traceback logged."""
    error = "".join(traceback.format_exception(exc))
    log(f"failed (attempt {attempts}/{manifest.max_attempts}):\n{error}")
    return _result(
        manifest,
        cell,
        status="failed",
        attempts=attempts,
        started=started,
        device=device,
        complexity=counts,
        error=error,
    )


def _finished(
    manifest: Manifest,
    cell: CellSpec,
    attempts: int,
    started: str,
    device: str,
    counts: Any,
    log: _CellLog,
    outcome: TrainOutcome,
    timings: dict[str, float],
) -> CellResult:
    """The result of a trained cell (done or diverged); its seconds summed into `timings`."""
    spent = {**outcome.overhead, "train": outcome.train_seconds, "eval": outcome.eval_seconds}
    for key, seconds in spent.items():
        timings[key] = timings.get(key, 0.0) + seconds
    log(_summary(outcome))
    return _result(
        manifest,
        cell,
        status=outcome.status,
        attempts=attempts,
        started=started,
        device=device,
        outcome=outcome,
        complexity=counts,
    )


def _run_cell(
    manifest: Manifest,
    cell: CellSpec,
    attempts: int,
    device: str,
    stop_flag: Callable[[], bool] | None,
    timings: dict[str, float],
) -> CellResult:
    """One attempt at a cell, its result written; its log says what happened."""
    name = manifest.dataset_name
    paths = _layout(manifest).cell(name, cell.arch_id, cell.seed)
    log = _CellLog(paths.log)
    try:
        log(
            f"cell {name}/{cell_stem(cell.arch_id, cell.seed)} attempt {attempts}/{manifest.max_attempts} "
            f"on {provenance.host()} job {provenance.job_id() or '-'} device {device}"
        )
        result = _attempt(manifest, cell, attempts, device, paths, log, stop_flag, timings)
        write_start = time.perf_counter()
        write_cell(paths.result, result)
        timings["write"] = timings.get("write", 0.0) + time.perf_counter() - write_start
        if is_final(result.status):
            # A failed cell keeps its checkpoint: the retry resumes from it.
            paths.checkpoint.unlink(missing_ok=True)
        return result
    except CellInterrupted as exc:
        log(f"interrupted: {exc}; the next run resumes from the last epoch-end checkpoint")
        raise
    except (SystemExit, KeyboardInterrupt, UncompletedJobError) as exc:
        # submitit's preemption handler exits (or gives up) from inside the step it interrupts.
        log(
            f"stopped ({type(exc).__name__}); the next run resumes from the last epoch-end checkpoint"
        )
        raise
    finally:
        log.close()


def run_chunk(
    manifest_path: Path | str,
    *,
    stop_flag: Callable[[], bool] | None = None,
    timings: dict[str, float] | None = None,
) -> list[CellResult]:
    """Run a chunk's unfinished cells; returns the result of every cell of the chunk, in order.

    A `done` or `diverged` cell is skipped, a `failed` one retried until `max_attempts`.
    `timings`, when given, sums seconds spent on loaders, build, restore, checkpoint and write
    (the per-cell overhead) and on train and eval. Raises CellInterrupted when `stop_flag`
    stops a cell.
    """
    manifest = read_manifest(Path(manifest_path))
    device = _resolve_device(manifest.device)
    if manifest.threads:
        torch.set_num_threads(manifest.threads)
    timings = {} if timings is None else timings
    results: list[CellResult] = []
    name = manifest.dataset_name
    progress = tqdm(manifest.cells, desc=f"{name} chunk", unit="cell", disable=None)
    pending: list[tuple[CellSpec, int]] = []  # cells left for cohorts (manifest.cohort > 1)
    for cell in progress:
        stem = cell_stem(cell.arch_id, cell.seed)
        previous = _previous(_layout(manifest).cell(name, cell.arch_id, cell.seed).result)
        if is_finished(previous, manifest.max_attempts):
            results.append(previous)
            continue
        if stop_flag is not None and stop_flag():
            raise CellInterrupted(f"stopped before cell {stem}")
        attempts = previous.attempts + 1 if previous is not None else 1
        if manifest.cohort > 1:
            pending.append((cell, attempts))
            continue
        progress.set_postfix_str(stem)
        results.append(_run_cell(manifest, cell, attempts, device, stop_flag, timings))
    if pending:
        return _run_cohorts(manifest, results, pending, device, stop_flag, timings)
    return results


# --- Cohorts (manifest.cohort > 1): a chunk's cells of one seed trained in lockstep ---------


@dataclass
class _Member:
    """One cell of a cohort in the worker: its files, log, attempt and training."""

    cell: CellSpec
    attempts: int
    paths: CellPaths
    log: _CellLog
    started: str
    counts: Any = None
    run: CellRun | None = None
    result: CellResult | None = None  # set early when the cell could not even be built


def _cohort_groups(
    pending: list[tuple[CellSpec, int]], size: int
) -> list[list[tuple[CellSpec, int]]]:
    """The pending cells in cohorts of one seed, at most `size` each, in manifest order."""
    by_seed: dict[int, list[tuple[CellSpec, int]]] = {}
    for cell, attempts in pending:
        by_seed.setdefault(cell.seed, []).append((cell, attempts))
    return [group[i : i + size] for group in by_seed.values() for i in range(0, len(group), size)]


def _run_cohorts(
    manifest: Manifest,
    earlier: list[CellResult],
    pending: list[tuple[CellSpec, int]],
    device: str,
    stop_flag: Callable[[], bool] | None,
    timings: dict[str, float],
) -> list[CellResult]:
    """Train the pending cells in cohorts; every cell's result, in manifest order."""
    done = {(r.arch_id, r.seed): r for r in earlier}
    for group in _cohort_groups(pending, manifest.cohort):
        for result in _run_cohort(manifest, group, device, stop_flag, timings):
            done[(result.arch_id, result.seed)] = result
    return [done[(c.arch_id, c.seed)] for c in manifest.cells]


def _join(manifest: Manifest, cell: CellSpec, attempts: int, device: str, k: int) -> _Member:
    name = manifest.dataset_name
    paths = _layout(manifest).cell(name, cell.arch_id, cell.seed)
    member = _Member(cell, attempts, paths, _CellLog(paths.log), provenance.now())
    member.log(
        f"cell {name}/{cell_stem(cell.arch_id, cell.seed)} attempt {attempts}/{manifest.max_attempts} "
        f"on {provenance.host()} job {provenance.job_id() or '-'} device {device} (cohort of {k})"
    )
    return member


def _build_member(manifest: Manifest, member: _Member, data: _Loaders, device: str) -> None:
    """Build the member's training; an error here is its failed result, as for one cell."""
    from anynet.arch import Architecture
    from anynet.complexity import complexity

    cell = member.cell
    try:
        arch = Architecture.from_dict(cell.arch)
        member.log(f"architecture {arch.name}")
        member.counts = complexity(arch, resolution=data.resolution, num_classes=data.num_classes)
        member.run = CellRun(
            arch,
            manifest.recipe,
            seed=cell.seed,
            init_seed=cell_seed(manifest.dataset_name, cell.arch_id, cell.seed),
            num_classes=data.num_classes,
            steps_per_epoch=len(data.train),
            device=device,
            checkpoint_path=member.paths.checkpoint,
            log=member.log,
        )
    except Exception as exc:
        if interruption(exc) is not None:
            raise
        member.result = _member_failed(manifest, member, device, exc)


def _member_failed(
    manifest: Manifest, member: _Member, device: str, exc: BaseException
) -> CellResult:
    args = (manifest, member.cell, member.attempts, member.started, device, member.counts)
    return _failed(*args, member.log, exc)


def _member_result(
    manifest: Manifest, member: _Member, device: str, timings: dict[str, float]
) -> CellResult:
    if member.result is not None:
        return member.result
    assert member.run is not None
    if member.run.error is not None:
        stop = interruption(member.run.error)
        if stop is not None:
            raise stop from None
        return _member_failed(manifest, member, device, member.run.error)
    args = (manifest, member.cell, member.attempts, member.started, device, member.counts)
    return _finished(*args, member.log, member.run.outcome(), timings)


def _run_cohort(
    manifest: Manifest,
    group: list[tuple[CellSpec, int]],
    device: str,
    stop_flag: Callable[[], bool] | None,
    timings: dict[str, float],
) -> list[CellResult]:
    """Train one cohort from one loader; each member's result written as one cell's is."""
    members = [_join(manifest, cell, attempts, device, len(group)) for cell, attempts in group]
    try:
        loaders_start = time.perf_counter()
        data = _loaders(manifest, device)
        timings["loaders"] = timings.get("loaders", 0.0) + time.perf_counter() - loaders_start
        for member in members:
            _build_member(manifest, member, data, device)
        runs = [m.run for m in members if m.run is not None]
        train_cohort(runs, data.train, data.test, seed=group[0][0].seed, stop_flag=stop_flag)
        results = [_member_result(manifest, m, device, timings) for m in members]
        for member, result in zip(members, results, strict=True):
            write_cell(member.paths.result, result)
            if is_final(result.status):
                member.paths.checkpoint.unlink(missing_ok=True)
        return results
    except (CellInterrupted, SystemExit, KeyboardInterrupt, UncompletedJobError) as exc:
        said = f"interrupted: {exc}" if isinstance(exc, CellInterrupted) else ""
        said = said or f"stopped ({type(exc).__name__})"
        for member in members:
            member.log(f"{said}; the next run resumes from the last epoch-end checkpoint")
        raise
    finally:
        for member in members:
            member.log.close()


# --- end of cohorts ----------------------------------------------------------------------------


class Chunk(submitit.helpers.Checkpointable):
    """The submitit job of one chunk: `Chunk(manifest_path)()` runs it.

    On SIGUSR2 submitit calls `checkpoint`, requeues the job and exits; the requeued job
    skips finished cells and resumes the running one from its last epoch-end checkpoint.
    """

    def __init__(self, manifest_path: Path | str) -> None:
        self.manifest_path = str(manifest_path)

    def __call__(self) -> list[CellResult]:
        return run_chunk(self.manifest_path)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # Epoch-end checkpoints are on disk already; the interrupted epoch restarts.
        return submitit.helpers.DelayedSubmission(Chunk(self.manifest_path))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpc.worker",
        description="Run one chunk of a study: its manifest's cells in order, resuming where it stopped.",
    )
    parser.add_argument("manifest", nargs="?", type=Path, help="the chunk's manifest (JSON)")
    parser.add_argument(
        "--array", type=Path, metavar="DIR", help="a folder of N.json manifests (sbatch arrays)"
    )
    parser.add_argument(
        "--task-id",
        type=int,
        default=None,
        help="which DIR/N.json to run (default: $SLURM_ARRAY_TASK_ID)",
    )
    args = parser.parse_args(argv)
    if (args.manifest is None) == (args.array is None):
        parser.error(
            "give either MANIFEST or --array DIR (with --task-id N or $SLURM_ARRAY_TASK_ID)"
        )
    if args.array is not None:
        task = args.task_id
        if task is None and os.environ.get("SLURM_ARRAY_TASK_ID", "").isdigit():
            task = int(os.environ["SLURM_ARRAY_TASK_ID"])
        if task is None:
            parser.error("--array needs --task-id N (or $SLURM_ARRAY_TASK_ID)")
        args.manifest = args.array / f"{task}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hpc.worker`: exit 0 when every cell is final, 1 when some failed, 2 on bad
    input, 3 when interrupted by SIGUSR2 (requeued inside Slurm)."""
    args = _parse(argv)
    _stop.clear()
    # Slurm's `--signal=B:USR2@T` warns before the end: stop at the next step, keep the
    # last epoch-end checkpoint, requeue.
    try:  # bad input is told apart before any cell runs: an error later is not the input's
        _resolve_device(read_manifest(args.manifest).device)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hpc.worker: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    previous = signal.signal(signal.SIGUSR2, lambda _signum, _frame: _stop.set())
    try:
        results = run_chunk(args.manifest, stop_flag=_stop.is_set)
    except CellInterrupted as exc:
        print(f"hpc.worker: {exc}; {requeue_this_job()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGUSR2, previous)
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    print(
        f"hpc.worker: {args.manifest}: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
        file=sys.stderr,
    )
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_DONE
