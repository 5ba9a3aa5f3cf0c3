"""One attempt at one cell inside a chunk: its files and log, its training (alone, or as a
member of a cohort), and its result (done, diverged, or failed with the traceback), appended
with its log to the task's pack (hpc.study.packs). Everything a chunk's cells share travels
in one `ChunkRun`.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from submitit.core.utils import UncompletedJobError

from analysis.schema import CellResult, CorruptResultError, read_cell
from anynet.arch import Architecture
from anynet.complexity import Complexity, complexity
from hpc import provenance
from hpc.scheduling.manifest import Manifest, ManifestCell
from hpc.study import fingerprint, packs
from hpc.study.layout import CellPaths, StudyLayout, cell_stem
from hpc.study.results import is_final
from hpc.worker.checkpoint import remove_temporaries
from hpc.worker.cohort import train_cohort
from hpc.worker.data import Loaders, loaders_for
from hpc.worker.device import DeviceLost, device_lost, is_cuda_error
from hpc.worker.graphs import member_class
from hpc.worker.train import CellInterrupted, CellRun, TrainOutcome, cell_seed, validate

# A result file the system would not let us read is asked this many times, this far apart.
PREVIOUS_TRIES, PREVIOUS_RETRY_S = 5, 1.0
# What stops a cell without failing it: a stop request, Ctrl-C or SIGINT from a scheduler, an
# exit, submitit's USR2 handler giving up on a requeue. The cell keeps its attempt.
STOPS = (CellInterrupted, KeyboardInterrupt, SystemExit, UncompletedJobError)
# What a result copies from the training's outcome.
OUTCOME_FIELDS = (
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


@dataclass
class ChunkRun:
    """What every cell of one chunk shares: its manifest, where the study's files are, the
    device, the stop request (polled after every step) and the seconds spent per step."""

    manifest: Manifest
    layout: StudyLayout
    device: str
    pack: Path  # where the chunk's records go
    stop_flag: Callable[[], bool] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def trained(self, cell: ManifestCell) -> fingerprint.Trained:
        """What a cell of the chunk trains with, as its record keeps it."""
        recipe = self.manifest.recipe.to_dict()
        return fingerprint.trained(self.manifest.dataset, recipe, cell.arch)

    def add_time(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    def data(self) -> Loaders:
        """The dataset's loaders (built once per process), the time it took counted."""
        start = time.perf_counter()
        data = loaders_for(self.manifest, self.device)
        self.add_time("loaders", time.perf_counter() - start)
        return data

    def paths(self, cell: ManifestCell) -> CellPaths:
        return self.layout.cell(self.manifest.dataset_name, cell.arch_id, cell.seed)


class CellLog:
    """A cell's log file while it runs, appended to by every run of the cell, one timestamped
    line each; its text goes into the cell's record, and the file away, when one is written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("a", buffering=1)

    def __call__(self, message: str) -> None:
        if self._handle.closed:  # a stop after the record was written
            self._handle = self.path.open("a", buffering=1)
        self._handle.write(f"{provenance.now()} {message}\n")

    def close(self) -> None:
        self._handle.close()

    def text(self) -> str:
        """What the log holds so far (it is closed first)."""
        self.close()
        return self.path.read_text(errors="replace")


@dataclass
class Attempt:
    """One attempt at one cell: its files and log, when it began, its architecture and what
    it counts, (in a cohort) its training, or its result when it failed to build, and the
    error it failed with."""

    cell: ManifestCell
    number: int
    paths: CellPaths
    log: CellLog
    started: str
    arch: Architecture | None = None
    counts: Complexity | None = None
    run: CellRun | None = None
    result: CellResult | None = None
    error: BaseException | None = None
    failed_at: float = 0.0  # when it failed (time.monotonic); a cohort's first is the culprit


def begin(chunk: ChunkRun, cell: ManifestCell, number: int, cohort: int = 0) -> Attempt:
    """Open the cell's log and say which attempt runs where (and in a cohort of how many)."""
    paths = chunk.paths(cell)
    attempt = Attempt(cell, number, paths, CellLog(paths.log), provenance.now())
    manifest = chunk.manifest
    attempt.log(
        f"cell {manifest.dataset_name}/{cell_stem(cell.arch_id, cell.seed)} attempt "
        f"{number}/{manifest.max_attempts} on {provenance.host()} job "
        f"{provenance.job_id() or '-'} device {chunk.device}"
        + (f" (cohort of {cohort})" if cohort else "")
    )
    return attempt


def previous_file_result(path: Path, tries: int = PREVIOUS_TRIES) -> CellResult | None:
    """A cell's one-cell result file (a study from before packs); a corrupt one (never
    written whole) is ignored.

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


def interruption(exc: BaseException) -> BaseException | None:
    """The interruption (one of STOPS) that `exc` is or was raised while handling, if any:
    cleanup code can replace the one with the other."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, STOPS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def run_cell(chunk: ChunkRun, cell: ManifestCell, number: int) -> CellResult:
    """One attempt at a cell alone, its result written; its log says what happened."""
    attempt = begin(chunk, cell, number)
    try:
        result = _train_alone(chunk, attempt)
        write(chunk, attempt, result)
        if attempt.error is not None and device_lost(chunk.device, attempt.error):
            raise device_lost_error(chunk, attempt)
        return result
    except STOPS as exc:
        # submitit's preemption handler exits (or gives up) from inside the step it interrupts.
        stopped(attempt, exc)
        raise
    finally:
        attempt.log.close()


def _train_alone(chunk: ChunkRun, attempt: Attempt) -> CellResult:
    """Train the cell; any exception but an interruption becomes a failed result."""
    manifest = chunk.manifest
    try:
        data = _build(chunk, attempt)
        if manifest.threads:  # an FFCV loader sets torch's threads when it is built
            torch.set_num_threads(manifest.threads)
        validate(data.train, manifest.recipe, data.num_classes)
        run = _cell_run(chunk, attempt, data)
        train_cohort(
            [run], data.train, data.test, seed=attempt.cell.seed, stop_flag=chunk.stop_flag
        )
        outcome = run.outcome()
    except CellInterrupted:
        raise
    except Exception as exc:
        stop = interruption(exc)
        if stop is not None:
            # A library's cleanup raised while a signal unwound it (torch.save's zip writer
            # does): the cell was stopped, not failed, and keeps its attempt.
            raise stop from None
        return failed(chunk, attempt, exc)
    return finished(chunk, attempt, outcome)


def _build(chunk: ChunkRun, attempt: Attempt) -> Loaders:
    """The cell's architecture read and counted at the dataset's resolution; the loaders."""
    attempt.arch = Architecture.from_dict(attempt.cell.arch)
    attempt.log(f"architecture {attempt.arch.name}")
    data = chunk.data()
    attempt.counts = complexity(
        attempt.arch, resolution=data.resolution, num_classes=data.num_classes
    )
    return data


def _cell_run(chunk: ChunkRun, attempt: Attempt, data: Loaders) -> CellRun:
    """The cell's training, seeded, built and restored from its checkpoint; stepped as CUDA
    graphs where the manifest asks for them and CUDA is here (speed only)."""
    cell, manifest = attempt.cell, chunk.manifest
    assert attempt.arch is not None  # read by _build
    member, said = member_class(manifest.cuda_graphs, chunk.device)
    if said:
        attempt.log(said)
    return member(
        attempt.arch,
        manifest.recipe,
        seed=cell.seed,
        init_seed=cell_seed(manifest.dataset_name, cell.arch_id, cell.seed),
        num_classes=data.num_classes,
        steps_per_epoch=len(data.train),
        device=chunk.device,
        checkpoint_path=attempt.paths.checkpoint,
        log=attempt.log,
    )


def join_cohort(chunk: ChunkRun, attempt: Attempt, data: Loaders) -> None:
    """Build a cohort member's training; an error here is its failed result, as alone."""
    try:
        _build(chunk, attempt)
        attempt.run = _cell_run(chunk, attempt, data)
    except Exception as exc:
        if interruption(exc) is not None:
            raise
        attempt.result = failed(chunk, attempt, exc)
        attempt.failed_at = time.monotonic()


def member_result(chunk: ChunkRun, attempt: Attempt) -> CellResult:
    """A cohort member's result once the cohort trained: built, trained or failed."""
    if attempt.result is not None:
        return attempt.result
    assert attempt.run is not None
    if attempt.run.error is not None:
        stop = interruption(attempt.run.error)
        if stop is not None:
            raise stop from None
        return failed(chunk, attempt, attempt.run.error)
    return finished(chunk, attempt, attempt.run.outcome())


def _failure(attempt: Attempt) -> tuple[float, BaseException] | None:
    """When and with what a cohort member failed (to build, or while training), if it did."""
    if attempt.run is not None and attempt.run.error is not None:
        return attempt.run.failed_at, attempt.run.error
    if attempt.error is not None:
        return attempt.failed_at, attempt.error
    return None


def lost_device(chunk: ChunkRun, members: list[Attempt]) -> Attempt | None:
    """The cohort member whose failure left the device unusable, if one did: the first to
    fail with a CUDA error (else the first to fail)."""
    failures = sorted(
        ((found[0], i, found[1]) for i, m in enumerate(members) if (found := _failure(m))),
        key=lambda item: item[:2],
    )
    if not failures or not device_lost(chunk.device, failures[0][2]):
        return None
    cuda = [item for item in failures if is_cuda_error(item[2])]
    return members[(cuda or failures)[0][1]]


def collateral(culprit: Attempt | None, member: Attempt) -> bool:
    """A member that failed with a CUDA error after `culprit` broke the device: it only met
    the broken device, so it is stopped, not charged an attempt."""
    found, first = _failure(member), culprit and _failure(culprit)
    if culprit is None or member is culprit or not found or not first:
        return False
    return found[0] >= first[0] and is_cuda_error(found[1])


def device_lost_error(chunk: ChunkRun, attempt: Attempt) -> DeviceLost:
    """The stop of a chunk whose cell `attempt` left the device unusable (logged there)."""
    key = f"{chunk.manifest.dataset_name}/{cell_stem(attempt.cell.arch_id, attempt.cell.seed)}"
    error = attempt.error
    last = (str(error).strip().splitlines() or [""])[-1] if error is not None else ""
    attempt.log("the device is unusable after this error: the chunk stops here")
    return DeviceLost(
        f"{chunk.device} is unusable after cell {key} failed ({type(error).__name__}: {last}); "
        "the chunk stops: the next launch retries its other cells in a fresh process"
    )


def failed(chunk: ChunkRun, attempt: Attempt, exc: BaseException) -> CellResult:
    """The failed result of an attempt that raised `exc`, its traceback logged."""
    attempt.error = exc
    error = "".join(traceback.format_exception(exc))
    attempt.log(f"failed (attempt {attempt.number}/{chunk.manifest.max_attempts}):\n{error}")
    return _result(chunk, attempt, "failed", error=error)


def finished(chunk: ChunkRun, attempt: Attempt, outcome: TrainOutcome) -> CellResult:
    """The result of a trained cell (done or diverged); its seconds summed into the timings."""
    spent = {**outcome.overhead, "train": outcome.train_seconds, "eval": outcome.eval_seconds}
    for key, seconds in spent.items():
        chunk.add_time(key, seconds)
    attempt.log(_summary(outcome))
    return _result(chunk, attempt, outcome.status, outcome=outcome)


def write(chunk: ChunkRun, attempt: Attempt, result: CellResult) -> None:
    """Append the cell's record (its result and log) to the task's pack; then the log file
    goes, and a final result frees the cell's checkpoint (a failed cell keeps it: the retry
    resumes from it)."""
    start = time.perf_counter()
    made = chunk.trained(attempt.cell)
    entry = packs.Entry(result, attempt.log.text(), made.config, made.arch)
    packs.append(chunk.pack, [entry])
    attempt.paths.log.unlink(missing_ok=True)
    if is_final(result.status):
        attempt.paths.checkpoint.unlink(missing_ok=True)
        remove_temporaries(attempt.paths.checkpoint)
    chunk.add_time("write", time.perf_counter() - start)


def stopped(attempt: Attempt, exc: BaseException) -> None:
    """Log why the attempt stopped; its last epoch-end checkpoint is where it resumes."""
    said = f"interrupted: {exc}" if isinstance(exc, CellInterrupted) else ""
    said = said or f"stopped ({type(exc).__name__})"
    attempt.log(f"{said}; the next run resumes from the last epoch-end checkpoint")


def _summary(outcome: TrainOutcome) -> str:
    if outcome.status == "diverged":
        return f"diverged in epoch {outcome.diverged_epoch + 1} (loss NaN/inf)"
    return (
        f"done: test err {outcome.top1_err:.2f}% (best {outcome.best_top1_err:.2f}% at epoch "
        f"{outcome.best_epoch + 1}), {outcome.images_per_s:.0f} images/s"
    )


def _result(
    chunk: ChunkRun,
    attempt: Attempt,
    status: str,
    *,
    outcome: TrainOutcome | None = None,
    error: str = "",
) -> CellResult:
    fields: dict[str, Any] = {}
    if outcome is not None:
        fields = {name: getattr(outcome, name) for name in OUTCOME_FIELDS}
        fields["train_seconds"] = outcome.wall_seconds
        fields["curves"] = outcome.curves
    if attempt.counts is not None:
        counts = attempt.counts
        fields.update(flops=counts.flops, params=counts.params, acts=counts.acts)
    manifest = chunk.manifest
    made = chunk.trained(attempt.cell)
    return CellResult(
        dataset=manifest.dataset_name,
        arch_id=attempt.cell.arch_id,
        seed=attempt.cell.seed,
        status=status,
        attempts=attempt.number,
        error=error,
        job_id=provenance.job_id(),
        host=provenance.host(),
        gpu=provenance.device_name(chunk.device),
        versions=provenance.versions_json(),
        recipe=made.recipe,
        started=attempt.started,
        finished=provenance.now(),
        spec=made.spec,
        fingerprint=made.fingerprint,
        **fields,
    )
