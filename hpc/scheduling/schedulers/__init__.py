"""The schedulers behind one interface, in the shape of submitit's executors: submit a
launch's chunks, tell the states of its tasks, find a task's log, cancel; and run a study's
other tasks (the training-free scores: `submit_tasks`, `running_tasks`). One module each:

- `local`: lanes on this machine that take chunks from a queue folder;
- `slurm`: arrays submitted through submitit;
- `sbatch`: array scripts a person submits (they run as Slurm jobs, so Slurm answers for
  their states and cancels them).

A launch record names its scheduler; only the modules here read that name or the part of a
record a scheduler keeps for itself. Modules import their scheduler client lazily, so that
status runs where only the analysis dependencies are installed.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from hpc.scheduling.plan import Array, Plan
from hpc.scheduling.records import ArrayRecord, LaunchRecord, planned_arrays, task_pack
from hpc.study.population import Population, dataset_arch
from hpc.study.spec import ClusterSpec, Study

NAMES = ("local", "slurm", "sbatch")
TaskKey = tuple[str, str, int]  # (record id, array label, task index)


class SchedulerError(RuntimeError):
    """The scheduler could not be asked; planning on a guess would submit cells twice."""


@dataclass(frozen=True)
class TaskState:
    state: str  # queued, running or ended
    job_id: str  # the scheduler's id ("123_4"), a local lane's pid, or "" when not known
    end: str = ""  # how an ended task ended, in its scheduler's words (FAILED, TIMEOUT, ...)
    reason: str = ""  # what else the scheduler says of that end ("exit 1", "signal 9")


@dataclass(frozen=True)
class Submission:
    """A planned launch handed to a scheduler: what to submit and under which record."""

    study: Study
    plan: Plan
    population: Population
    record_id: str
    jobs: int | None = None  # local: workers at once (None: one per core)

    def arrays(self) -> list[ArrayRecord]:
        return planned_arrays(self.study, self.record_id, self.plan.arrays)

    def write_manifests(
        self, path_of: Callable[[Array, int], Path], threads: int | None = None
    ) -> list[list[Path]]:
        """One manifest per chunk, at `path_of(array, chunk index)` (local lanes claim them
        one by one); `threads` None gives each worker its task's CPUs. Returns the paths per
        array."""
        from hpc.scheduling.manifest import write_manifest

        study, archs = self.study, self.population.archs
        paths = []
        for array in self.plan.arrays:
            entry = study.dataset(array.dataset)
            made = self.plan.attempts_of(array.dataset)
            paths.append([path_of(array, i) for i in range(len(array.chunks))])
            for i, (path, chunk) in enumerate(zip(paths[-1], array.chunks, strict=True)):
                write_manifest(
                    path,
                    study_dir=study.root,
                    data_dir=study.data_dir,
                    dataset=entry.spec,
                    recipe=entry.recipe,
                    cells=[(a, s, dataset_arch(archs[a], entry)) for a, s in chunk.cells],
                    max_attempts=study.settings.max_attempts,
                    device=study.settings.device,
                    threads=array.cluster.cpus if threads is None else threads,
                    cohort=chunk.cohort,
                    cuda_graphs=chunk.cuda_graphs,
                    task=task_pack(self.record_id, array.label, i),
                    attempts=made,
                )
        return paths

    def write_array_manifests(self) -> list[Path]:
        """One manifest per array, every task's cells in it (each architecture once);
        `python -m hpc.worker --array FILE --task-id N` runs task N. Returns the paths."""
        from hpc.scheduling.manifest import ArrayTask, write_array_manifest

        study, archs = self.study, self.population.archs
        paths = []
        for array in self.plan.arrays:
            entry = study.dataset(array.dataset)
            made = self.plan.attempts_of(array.dataset)
            used = sorted({a for chunk in array.chunks for a, _ in chunk.cells})
            tasks = [
                ArrayTask(
                    task_pack(self.record_id, array.label, i),
                    [(a, s, made.get((a, s), 0)) for a, s in chunk.cells],
                )
                for i, chunk in enumerate(array.chunks)
            ]
            path = study.layout.array_manifest(self.record_id, array.label)
            write_array_manifest(
                path,
                study_dir=study.root,
                data_dir=study.data_dir,
                dataset=entry.spec,
                recipe=entry.recipe,
                archs={a: dataset_arch(archs[a], entry) for a in used},
                tasks=tasks,
                max_attempts=study.settings.max_attempts,
                device=study.settings.device,
                threads=array.cluster.cpus,
                cohort=array.chunks[0].cohort,  # the planner prices a dataset's chunks alike
                cuda_graphs=array.chunks[0].cuda_graphs,
            )
            paths.append(path)
        return paths


@dataclass(frozen=True)
class TaskGroup:
    """Tasks of one label (a dataset): one Slurm array, with that dataset's resources."""

    label: str
    cluster: ClusterSpec
    tasks: tuple[dict[str, Any], ...]  # each written as the JSON file its runner reads
    costs: tuple[float, ...]  # relative work of each task: local lanes take the costliest first


@dataclass(frozen=True)
class Tasks:
    """A study's work that is not its cells (the training-free scores): every task a JSON
    file that `runner(path)` runs, on no GPU. `run_id` names the run's folder under jobs/
    (its tasks and submitit's folders) and its job names; no launch record is written."""

    study: Study
    run_id: str
    groups: tuple[TaskGroup, ...]
    runner: Callable[[Path], Any]  # module-level, so that submitit pickles it by reference
    jobs: int | None = None  # local: workers at once (None: one per core)

    def write(
        self, path_of: Callable[[TaskGroup, int], Path], threads: int | None = None
    ) -> list[list[Path]]:
        """One file per task at `path_of(group, task index)`, its `threads` set (None: the
        group's CPUs per task). Returns the paths per group."""
        from analysis.files import write_json

        paths = []
        for group in self.groups:
            paths.append([path_of(group, i) for i in range(len(group.tasks))])
            for path, task in zip(paths[-1], group.tasks, strict=True):
                write_json(path, {**task, "threads": threads or group.cluster.cpus})
        return paths


@dataclass(frozen=True)
class Submitted:
    """What a scheduler did with a submission."""

    job_ids: tuple[str, ...] = ()  # array job ids (Slurm) or lane pids (local)
    jobs: tuple[Any, ...] = ()  # submitit Jobs of processes that end with this command
    files: tuple[Path, ...] = ()  # what a person submits (sbatch scripts, then submit.sh)


class Scheduler(ABC):
    """One way to run a study's chunks."""

    name: ClassVar[str]  # the record's scheduler: local, slurm or sbatch
    queue: ClassVar[str]  # schedulers of one queue are asked together (one squeue)
    record_kind: ClassVar[str] = "L"  # record ids: L0001 for launches, S0001 for sbatch
    poll_s: ClassVar[float] = 15.0  # seconds between two looks at the jobs while waiting
    # What `anysweep launch` says it did, with {n} jobs and their {ids}.
    summary: ClassVar[str] = "submitted {n} jobs (ids {ids})"

    def array_size(self, study: Study) -> int:
        """The most chunks one array may hold."""
        return study.cluster.max_array_size

    def lanes(self, jobs: int | None) -> int | None:
        """Workers at once, where the planner should keep that many busy; None: arrays."""
        return None

    def check_ready(self) -> None:
        """Raise ValueError, before any work, when this scheduler cannot be reached."""
        return None

    @abstractmethod
    def submit(self, submission: Submission) -> Submitted:
        """Submit (or write, for a person to submit) the plan's chunks and its record."""

    @abstractmethod
    def task_states(
        self, study: Study, records: Sequence[LaunchRecord]
    ) -> dict[TaskKey, TaskState]:
        """What the scheduler says of every task of these records (of this queue), asked once."""

    def task_report(
        self, study: Study, records: Sequence[LaunchRecord]
    ) -> dict[TaskKey, TaskState]:
        """`task_states` with how ended tasks ended, where the scheduler remembers it: what
        `status` shows. Asked once per refresh too."""
        return self.task_states(study, records)

    @abstractmethod
    def task_log(
        self, study: Study, record: LaunchRecord, array: ArrayRecord, index: int
    ) -> Path | None:
        """The scheduler's log of one task, when there is one."""

    @abstractmethod
    def cancel(self, study: Study, records: Sequence[LaunchRecord]) -> list[str]:
        """Cancel the queued and running tasks of these records; what was cancelled."""

    def submit_tasks(self, tasks: Tasks) -> Submitted:
        """Run a study's other tasks; a scheduler that cannot raises ValueError."""
        raise ValueError(f"--cluster {self.name} cannot run score tasks; valid: local, slurm")

    def running_tasks(self, study: Study, kind: str) -> set[tuple[str, str]]:
        """(run id, label) of the study's other tasks queued or running elsewhere, of runs
        whose ids start with `kind`; processes this command started are its own to watch."""
        return set()


def get(name: str) -> Scheduler:
    """The scheduler of that name; an unknown one is an error naming the valid ones."""
    if name not in NAMES:
        raise ValueError(f"cluster {name!r} is not one of {NAMES}")
    module = importlib.import_module(f"hpc.scheduling.schedulers.{name}")
    scheduler: Scheduler = module.SCHEDULER
    return scheduler


def of(record: LaunchRecord) -> Scheduler:
    """The scheduler that submitted a record."""
    return get(record.scheduler)


def _by_queue(records: Sequence[LaunchRecord]) -> dict[str, tuple[Scheduler, list[LaunchRecord]]]:
    groups: dict[str, tuple[Scheduler, list[LaunchRecord]]] = {}
    for record in records:
        scheduler = of(record)
        groups.setdefault(scheduler.queue, (scheduler, []))[1].append(record)
    return groups


def task_states(study: Study, records: Sequence[LaunchRecord]) -> dict[TaskKey, TaskState]:
    """Every task's state, each queue asked once (Slurm and sbatch records by one squeue)."""
    states: dict[TaskKey, TaskState] = {}
    for scheduler, group in _by_queue(records).values():
        states.update(scheduler.task_states(study, group))
    return states


def task_report(study: Study, records: Sequence[LaunchRecord]) -> dict[TaskKey, TaskState]:
    """Every task's state and, for ended ones, how they ended; each queue asked once."""
    states: dict[TaskKey, TaskState] = {}
    for scheduler, group in _by_queue(records).values():
        states.update(scheduler.task_report(study, group))
    return states


def cancel_all(study: Study, records: Sequence[LaunchRecord]) -> list[str]:
    """Cancel the queued and running tasks of every record, each queue once."""
    cancelled: list[str] = []
    for scheduler, group in _by_queue(records).values():
        cancelled.extend(scheduler.cancel(study, group))
    return cancelled
