"""The chunk worker: runs a manifest's cells in order (alone, or in cohorts that train in
lockstep from one loader), one record per finished, diverged or failed cell appended to the
task's pack.

Reachable as `hpc.worker.Chunk(manifest, task)` (submitit, requeued on SIGUSR2),
`python -m hpc.worker MANIFEST` or `python -m hpc.worker --array FILE --task-id N` (sbatch).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit
import torch
from submitit.core.utils import UncompletedJobError
from tqdm import tqdm  # type: ignore[import-untyped]

from analysis.schema import STATUSES, CellResult
from hpc.scheduling.cost import cohorts
from hpc.scheduling.manifest import Manifest, ManifestCell, read_manifest
from hpc.scheduling.schedulers.slurm import requeue_this_job
from hpc.study import packs
from hpc.study.layout import StudyLayout, cell_stem, task_manifest
from hpc.study.results import counting, is_finished
from hpc.worker import preempt
from hpc.worker.cell import (
    STOPS,
    Attempt,
    ChunkRun,
    begin,
    collateral,
    device_lost_error,
    join_cohort,
    lost_device,
    member_result,
    previous_file_result,
    run_cell,
    stopped,
    write,
)
from hpc.worker.cohort import train_cohort
from hpc.worker.device import DeviceLost
from hpc.worker.train import CellInterrupted

# Exit codes of `python -m hpc.worker`.
EXIT_DONE, EXIT_SOME_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 3

Pending = list[tuple[ManifestCell, int]]  # cells left to train, with their attempt numbers


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA device")
    return device


def task_name(manifest: Manifest, path: Path, task: int | None) -> str:
    """The pack a chunk's records go to: the manifest's task, or one named after the
    manifest's path (manifests from before packs)."""
    if manifest.task:
        return manifest.task
    where = f"{Path(path).resolve()}#{task}"
    return "m-" + hashlib.sha1(where.encode()).hexdigest()[:12]


def previous_results(chunk: ChunkRun) -> dict[tuple[int, int], CellResult]:
    """The result that counts of each of the chunk's cells that has one: from the task's
    pack (a requeued or repeated run), or from a one-cell result file (before packs)."""
    found = [s.result for s in packs.stored(chunk.pack)]
    for cell in chunk.manifest.cells:
        legacy = chunk.paths(cell).legacy_result
        if legacy.exists() and (old := previous_file_result(legacy)) is not None:
            found.append(old)
    mine = {(c.arch_id, c.seed) for c in chunk.manifest.cells}
    keys = [(r.arch_id, r.seed) if (r.arch_id, r.seed) in mine else None for r in found]
    code = {k: i for i, k in enumerate(mine)}
    _, rows = counting(
        [code[k] if k is not None else -1 for k in keys],
        [STATUSES.index(r.status) for r in found],
        [r.attempts for r in found],
        list(range(len(found))),  # in the order written
        [False] * len(found),
    )
    return {(found[r].arch_id, found[r].seed): found[r] for r in rows.tolist()}


def run_chunk(
    manifest_path: Path | str,
    *,
    task: int | None = None,
    stop_flag: Callable[[], bool] | None = None,
    timings: dict[str, float] | None = None,
) -> list[CellResult]:
    """Run a chunk's unfinished cells (task `task` of an array's manifest); returns the
    result of every cell of the chunk, in order.

    A `done` or `diverged` cell is skipped, a `failed` one retried until `max_attempts`
    (counting the attempts the manifest says were made before). `timings`, when given, sums
    seconds spent on loaders, build, restore, checkpoint and write (the per-cell overhead)
    and on train and eval. Raises CellInterrupted when `stop_flag` stops a cell, and
    DeviceLost (its failed result written) when a cell's error left the device unusable for
    this process.
    """
    manifest = read_manifest(Path(manifest_path), task)
    layout = StudyLayout(manifest.study_dir, manifest.data_dir)
    device = resolve_device(manifest.device)
    pack = layout.pack(manifest.dataset_name, task_name(manifest, Path(manifest_path), task))
    chunk = ChunkRun(manifest, layout, device, pack, stop_flag, {} if timings is None else timings)
    if manifest.threads:
        torch.set_num_threads(manifest.threads)
    results: list[CellResult] = []
    pending: Pending = []  # cells left for cohorts (manifest.cohort > 1)
    earlier = previous_results(chunk)
    progress = tqdm(
        manifest.cells, desc=f"{manifest.dataset_name} chunk", unit="cell", disable=None
    )
    for cell in progress:
        stem = cell_stem(cell.arch_id, cell.seed)
        previous = earlier.get((cell.arch_id, cell.seed))
        if previous is not None and is_finished(previous, manifest.max_attempts):
            results.append(previous)
            continue
        if stop_flag is not None and stop_flag():
            raise CellInterrupted(f"stopped before cell {stem}")
        number = max(previous.attempts if previous is not None else 0, cell.attempts) + 1
        if manifest.cohort > 1:
            pending.append((cell, number))
            continue
        progress.set_postfix_str(stem)
        results.append(run_cell(chunk, cell, number))
    if pending:
        return _run_cohorts(chunk, results, pending)
    return results


def _run_cohorts(chunk: ChunkRun, earlier: list[CellResult], pending: Pending) -> list[CellResult]:
    """Train the pending cells in cohorts; every cell's result, in manifest order."""
    done = {(r.arch_id, r.seed): r for r in earlier}
    # Cohorts of one seed (data order belongs to the dataset and the seed), in manifest order.
    for group in cohorts(pending, lambda item: item[0].seed, chunk.manifest.cohort):
        for result in _run_cohort(chunk, group):
            done[(result.arch_id, result.seed)] = result
    return [done[(c.arch_id, c.seed)] for c in chunk.manifest.cells]


def _run_cohort(chunk: ChunkRun, group: Pending) -> list[CellResult]:
    """Train one cohort from one loader; each member's result written as one cell's is."""
    members = [begin(chunk, cell, number, cohort=len(group)) for cell, number in group]
    try:
        data = chunk.data()
        for member in members:
            join_cohort(chunk, member, data)
        runs = [m.run for m in members if m.run is not None]
        seed = group[0][0].seed
        train_cohort(runs, data.train, data.test, seed=seed, stop_flag=chunk.stop_flag)
        return _write_members(chunk, members)
    except STOPS as exc:
        for member in members:
            stopped(member, exc)
        raise
    finally:
        for member in members:
            member.log.close()


def _write_members(chunk: ChunkRun, members: list[Attempt]) -> list[CellResult]:
    """Each member's result written. When a member's error left the device unusable, those
    that failed after it only met the broken device: they keep their attempts, the chunk
    stops."""
    culprit = lost_device(chunk, members)
    results = []
    for member in members:
        if collateral(culprit, member):
            stopped(member, DeviceLost("the device was lost to another member's error"))
            continue
        results.append(member_result(chunk, member))
        write(chunk, member, results[-1])
    if culprit is not None:
        raise device_lost_error(chunk, culprit)
    return results


class Chunk(submitit.helpers.Checkpointable):
    """The submitit job of one chunk: `Chunk(manifest_path)()` runs it.

    On SIGUSR2 the chunk stops at the next step and submitit's handler requeues the job
    (calling `checkpoint`) and exits; the requeued job skips finished cells and resumes the
    running one from its last epoch-end checkpoint. A refused requeue ends the chunk cleanly.
    """

    def __init__(self, manifest_path: Path | str, task: int | None = None) -> None:
        self.manifest_path = str(manifest_path)
        self.task = task

    def __call__(self) -> list[CellResult]:
        # submitit's job runner installed its handler: it checkpoints and requeues the task.
        # It runs below, between two steps, where a refused requeue can be told apart, and
        # with the flag handler still in: a second USR2 (scancel retries) only sets the flag.
        requeue = signal.getsignal(signal.SIGUSR2)
        with preempt.caught() as stop:
            try:
                # Jobs pickled before array manifests have no task.
                return run_chunk(self.manifest_path, task=self._task(), stop_flag=stop)
            except CellInterrupted as exc:
                return self._requeue(requeue, exc)

    def _task(self) -> int | None:
        return getattr(self, "task", None)

    def _requeue(self, requeue: Any, interrupted: CellInterrupted) -> list[CellResult]:
        """Requeue the task through submitit's handler (which exits the process); if the
        requeue fails (scontrol refused, or was killed by a preemption's SIGTERM), the chunk
        stops here: no cell is charged an attempt, and the next launch resumes them."""
        if not callable(requeue) or preempt.is_ours(requeue):  # not under submitit's runner
            print(f"hpc.worker: {interrupted}; {requeue_this_job()}", file=sys.stderr, flush=True)
            return self.results()
        try:
            requeue(signal.SIGUSR2, None)
        except UncompletedJobError:
            raise  # out of time-out requeues: submitit ends the task
        except Exception as exc:  # noqa: BLE001 - whatever stopped scontrol, the chunk stops
            print(
                f"hpc.worker: {interrupted}; the requeue failed ({type(exc).__name__}: {exc}); "
                "the chunk stops here and the next launch resumes its cells",
                file=sys.stderr,
                flush=True,
            )
        return self.results()

    def results(self) -> list[CellResult]:
        """The results on record of this chunk's cells (those that have one), in order."""
        path, task = Path(self.manifest_path), self._task()
        manifest = read_manifest(path, task)
        layout = StudyLayout(manifest.study_dir, manifest.data_dir)
        pack = layout.pack(manifest.dataset_name, task_name(manifest, path, task))
        found = previous_results(ChunkRun(manifest, layout, "cpu", pack, None, {}))
        cells = [(c.arch_id, c.seed) for c in manifest.cells]
        return [found[c] for c in cells if c in found]

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # Epoch-end checkpoints are on disk already; the interrupted epoch restarts.
        task = getattr(self, "task", None)
        return submitit.helpers.DelayedSubmission(Chunk(self.manifest_path, task))


# Pickled jobs name the class by its public path, hpc.worker.Chunk: where its module lives
# inside the package may change without stranding a queued job.
Chunk.__module__ = "hpc.worker"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpc.worker",
        description="Run one chunk of a study: its manifest's cells in order, resuming where it stopped.",
    )
    parser.add_argument("manifest", nargs="?", type=Path, help="the chunk's manifest (JSON)")
    parser.add_argument(
        "--array",
        type=Path,
        metavar="FILE",
        help="an array's manifest (sbatch arrays; a folder of N.json manifests also works)",
    )
    parser.add_argument(
        "--task-id",
        type=int,
        default=None,
        help="which task of the array to run (default: $SLURM_ARRAY_TASK_ID)",
    )
    args = parser.parse_args(argv)
    if (args.manifest is None) == (args.array is None):
        parser.error(
            "give either MANIFEST or --array FILE (with --task-id N or $SLURM_ARRAY_TASK_ID)"
        )
    args.task = None
    if args.array is not None:
        task = args.task_id
        if task is None and os.environ.get("SLURM_ARRAY_TASK_ID", "").isdigit():
            task = int(os.environ["SLURM_ARRAY_TASK_ID"])
        if task is None:
            parser.error("--array needs --task-id N (or $SLURM_ARRAY_TASK_ID)")
        if args.array.is_dir():  # one manifest per task, as launches before array manifests
            args.manifest = task_manifest(args.array, task)
        else:
            args.manifest, args.task = args.array, task
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hpc.worker`: exit 0 when every cell is final, 1 when some failed (or one
    left the device unusable: the chunk stopped), 2 on bad input, 3 when interrupted by
    SIGUSR2 (requeued inside Slurm when Slurm accepts)."""
    args = _parse(argv)
    try:  # bad input is told apart before any cell runs: an error later is not the input's
        resolve_device(read_manifest(args.manifest, args.task).device)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hpc.worker: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # Slurm's `--signal=B:USR2@T` warns before the end: stop at the next step, keep the
    # last epoch-end checkpoint, requeue.
    with preempt.caught() as stop:
        try:
            results = run_chunk(args.manifest, task=args.task, stop_flag=stop)
        except CellInterrupted as exc:
            print(f"hpc.worker: {exc}; {requeue_this_job()}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except DeviceLost as exc:
            print(f"hpc.worker: {exc}", file=sys.stderr)
            return EXIT_SOME_FAILED
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    print(
        f"hpc.worker: {args.manifest}: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
        file=sys.stderr,
    )
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_DONE
