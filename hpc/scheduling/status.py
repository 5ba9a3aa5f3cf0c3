"""What each cell of a study is doing: done, running, queued, failed, diverged or missing,
and how the tasks that left cells unfinished ended.

Reads the launch records under jobs/, the result files, and each scheduler once (one `squeue`
for all of a study's Slurm jobs, however many, when planning; one `sacct` for `status`, which
also remembers ended tasks); never imports torch or ffcv.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.scheduling import schedulers
from hpc.scheduling.records import ArrayRecord, LaunchRecord, read_records
from hpc.study.results import (
    ArchSeed,
    Cell,
    ResultSummary,
    is_final,
    is_finished,
    scan_results,
    study_cells,
)
from hpc.study.spec import Study

STATES = ("done", "running", "queued", "failed", "diverged", "missing")


@dataclass(frozen=True)
class Task:
    """One array task (or local chunk) of a record and what its scheduler says of it now."""

    record: LaunchRecord
    array: ArrayRecord
    index: int  # the task's index in its array
    state: str  # queued, running or ended
    job_id: str  # scheduler id ("123_4"), the local lane, or "" when not known
    end: str = ""  # how an ended task ended, in its scheduler's words ("" when not known)
    reason: str = ""  # what else its scheduler says of that end ("exit 1", "signal 9")

    @property
    def label(self) -> str:
        return self.array.label

    @property
    def dataset(self) -> str:
        return self.array.dataset

    @property
    def cells(self) -> tuple[ArchSeed, ...]:
        return self.array.tasks[self.index].cells

    @property
    def since(self) -> float:
        """When the record was written: results older than this predate the task."""
        return self.record.created_ts


def tasks(
    study: Study, records: list[LaunchRecord] | None = None, *, report: bool = False
) -> list[Task]:
    """Every task of every record with its state now; each scheduler is asked once. With
    `report`, ended tasks say how they ended where the scheduler remembers it (Slurm asks
    its accounting, sacct, instead of squeue: what `status` shows)."""
    records = read_records(study) if records is None else records
    ask = schedulers.task_report if report else schedulers.task_states
    states = ask(study, records)
    out = []
    for record in records:
        for array in record.arrays:
            for index in range(len(array.tasks)):
                now = states[(record.id, array.label, index)]
                out.append(Task(record, array, index, now.state, now.job_id, now.end, now.reason))
    return out


def cell_states(
    study: Study,
    results: Mapping[Cell, ResultSummary] | None = None,
    task_list: list[Task] | None = None,
) -> dict[Cell, str]:
    """The state of every cell of the study (one of STATES)."""
    results = scan_results(study) if results is None else results
    task_list = tasks(study) if task_list is None else task_list
    attempts = study.settings.max_attempts
    states: dict[Cell, str] = {}
    for cell in study_cells(study):
        summary = results.get(cell)
        if summary is not None and is_final(summary.status):
            states[cell] = summary.status
        elif summary is not None and summary.status == "failed":
            states[cell] = "failed"
        else:
            states[cell] = "missing"
    for task in task_list:
        if task.state == "ended":
            continue
        first = True
        for arch_id, seed in task.cells:
            cell = Cell(task.dataset, arch_id, seed)
            if cell not in states:
                continue  # the study shrank since
            summary = results.get(cell)
            if is_finished(summary, attempts) or (
                summary is not None and summary.status != "corrupt" and summary.mtime >= task.since
            ):
                continue  # the task skips it, or has run it already
            states[cell] = "running" if task.state == "running" and first else "queued"
            first = False
    return states


def stopped_tasks(study: Study, states: Mapping[Cell, str], task_list: list[Task]) -> list[dict]:
    """The ended tasks that left cells unfinished (missing, or failed), each with its job id,
    how it ended, its log and those cells: every such cell under the latest task that had it."""
    latest: dict[Cell, Task] = {}
    for task in task_list:  # records oldest first: a later task replaces an earlier one
        for arch_id, seed in task.cells:
            latest[Cell(task.dataset, arch_id, seed)] = task
    found: dict[tuple[str, str, int], dict[str, Any]] = {}
    for cell, state in sorted(states.items()):
        last = latest.get(cell)
        if state not in ("missing", "failed") or last is None or last.state != "ended":
            continue
        task = last
        key = (task.record.id, task.label, task.index)
        if key not in found:
            log = schedulers.of(task.record).task_log(study, task.record, task.array, task.index)
            found[key] = {
                "task": task.job_id or f"{task.record.id} {task.label}.{task.index}",
                "state": task.end or "ended",
                "reason": task.reason,
                "log": str(log) if log is not None else "",
                "cells": [],
            }
        found[key]["cells"].append(cell.key)
    return [found[key] for key in sorted(found)]


def active_cells(study: Study, task_list: list[Task] | None = None) -> set[Cell]:
    """Cells that a queued or running task will still run: not to be submitted again."""
    task_list = tasks(study) if task_list is None else task_list
    return {Cell(t.dataset, a, s) for t in task_list if t.state != "ended" for a, s in t.cells}


@dataclass(frozen=True)
class StudyStatus:
    study: str
    counts: dict[str, dict[str, int]]  # dataset -> state -> cells
    failed: list[dict[str, Any]]  # {cell, attempts, error}
    corrupt: list[dict[str, str]]  # {cell, error}
    stopped: list[dict[str, Any]]  # {task, state, reason, log, cells}: see stopped_tasks
    gpu_hours_spent: float
    gpu_hours_remaining: float
    tasks_active: int
    cpu_hours_spent: float = 0.0  # of datasets whose tasks ask for no GPU
    cpu_hours_remaining: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "counts": self.counts,
            "failed": self.failed,
            "corrupt": self.corrupt,
            "stopped": self.stopped,
            "gpu_hours_spent": self.gpu_hours_spent,
            "gpu_hours_remaining": self.gpu_hours_remaining,
            "cpu_hours_spent": self.cpu_hours_spent,
            "cpu_hours_remaining": self.cpu_hours_remaining,
            "tasks_active": self.tasks_active,
        }


def study_status(study: Study) -> StudyStatus:
    """The matrix of cells by dataset and state, GPU-hours (CPU-hours where tasks ask for no
    GPU), what failed, and how the tasks that left cells unfinished ended."""
    from hpc.scheduling.plan import device_hours, remaining_hours
    from hpc.study.population import read_population, sample_architectures

    results = scan_results(study)
    task_list = tasks(study, report=True)
    states = cell_states(study, results, task_list)
    counts = {d.name: dict.fromkeys(STATES, 0) for d in study.datasets}
    for cell, state in states.items():
        counts[cell.dataset][state] += 1
    failed = [
        {"cell": c.key, "attempts": results[c].attempts, "error": results[c].error}
        for c, s in states.items()
        if s == "failed"
    ]
    corrupt = [
        {"cell": c.key, "error": r.error}
        for c, r in sorted(results.items())
        if r.status == "corrupt"
    ]
    spent = {"GPU": 0.0, "CPU": 0.0}
    for c, r in results.items():
        if r.train_seconds == r.train_seconds:  # not NaN
            kind, hours = device_hours(study.dataset(c.dataset).cluster, r.train_seconds)
            spent[kind] += hours
    population = read_population(study)
    if population is None or len(population) < study.settings.architectures:
        population = sample_architectures(study, write=False)
    gpu_left, cpu_left = remaining_hours(study, population, results)
    return StudyStatus(
        study=study.name,
        counts=counts,
        failed=failed,
        corrupt=corrupt,
        stopped=stopped_tasks(study, states, task_list),
        gpu_hours_spent=spent["GPU"],
        gpu_hours_remaining=gpu_left,
        tasks_active=sum(t.state != "ended" for t in task_list),
        cpu_hours_spent=spent["CPU"],
        cpu_hours_remaining=cpu_left,
    )


def format_status(status: StudyStatus) -> str:
    """The `anysweep status` table."""
    from hpc.scheduling.plan import hours_text

    width = max([7, *(len(n) for n in status.counts)])
    head = f"{'dataset':<{width}} " + " ".join(f"{s:>8}" for s in (*STATES, "total"))
    lines = [f"study {status.study}", head]
    totals = dict.fromkeys(STATES, 0)
    for name, row in status.counts.items():
        for state in STATES:
            totals[state] += row[state]
        cells = " ".join(f"{row[s]:>8}" for s in STATES)
        lines.append(f"{name:<{width}} {cells} {sum(row.values()):>8}")
    lines.append(
        f"{'all':<{width}} "
        + " ".join(f"{totals[s]:>8}" for s in STATES)
        + f" {sum(totals.values()):>8}"
    )
    lines.append(
        f"{hours_text(status.gpu_hours_spent, status.cpu_hours_spent, 2)} spent, about "
        f"{hours_text(status.gpu_hours_remaining, status.cpu_hours_remaining, 2)} remaining; "
        f"{status.tasks_active} tasks queued or running"
    )
    if status.failed:
        lines.append(f"failed cells ({len(status.failed)}):")
        lines.extend(
            f"  {f['cell']} (attempt {f['attempts']}): {f['error']}" for f in status.failed
        )
    if status.stopped:
        lines.append(f"tasks that ended before their cells did ({len(status.stopped)}):")
        lines.extend(_stopped_line(task) for task in status.stopped)
    if status.corrupt:
        lines.append(f"unreadable result files ({len(status.corrupt)}), to be run again:")
        lines.extend(f"  {c['cell']}: {c['error']}" for c in status.corrupt)
    return "\n".join(lines)


def _stopped_line(task: dict[str, Any]) -> str:
    cells = task["cells"]
    listed = ", ".join(cells[:4]) + (f" and {len(cells) - 4} more" if len(cells) > 4 else "")
    how = task["state"] + (f" ({task['reason']})" if task["reason"] else "")
    log = f"; log {task['log']}" if task["log"] else "; no log"
    return f"  {task['task']} {how}: {len(cells)} cell(s) unfinished: {listed}{log}"


def cell_logs(study: Study, cell_text: str) -> tuple[Path | None, Path | None]:
    """A cell's own log (written by the worker) and the scheduler log of the latest task that
    ran it, each None when absent."""
    cell = Cell.parse(cell_text)
    study.dataset(cell.dataset)  # an unknown dataset is an error naming the valid ones
    n, seeds = study.settings.architectures, study.settings.seeds
    if cell.arch_id >= n or cell.seed >= seeds:
        raise ValueError(
            f"{cell.key} is not a cell of the study: architectures 0..{n - 1}, seeds 0..{seeds - 1}"
        )
    own = study.layout.cell(cell.dataset, cell.arch_id, cell.seed).log
    task_log = None
    for record in reversed(read_records(study)):
        found = _task_of(record, cell)
        if found is not None:
            task_log = schedulers.of(record).task_log(study, record, *found)
        if task_log is not None:
            break
    return (own if own.exists() else None), task_log


def _task_of(record: LaunchRecord, cell: Cell) -> tuple[ArrayRecord, int] | None:
    """The array and task index of a record that ran `cell`, if one did."""
    for array in record.arrays:
        for index, task in enumerate(array.tasks):
            if array.dataset == cell.dataset and (cell.arch_id, cell.seed) in task.cells:
                return array, index
    return None
