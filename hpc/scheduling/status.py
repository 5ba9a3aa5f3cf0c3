"""What each cell of a study is doing: done, running, queued, failed, diverged, stale or
missing, and how the tasks that left cells unfinished ended.

Reads the launch records under jobs/, the results index (hpc.study.index) and each scheduler
once (one `squeue` for all of a study's Slurm jobs, however many, when planning; one `sacct`
for `status`, which also remembers ended tasks); every cell is one entry of a few arrays, so
a study of 600,000 cells is summed in seconds. Never imports torch or ffcv.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc.scheduling import schedulers
from hpc.scheduling.records import ArrayRecord, LaunchRecord, read_records
from hpc.study.index import records_of
from hpc.study.results import ArchSeed, Cell, Grid, Standing, standing
from hpc.study.spec import Study

STATES = ("done", "running", "queued", "failed", "diverged", "stale", "missing")
LIST_LIMIT = 20  # failed and stale cells listed by name; the rest are counted
_CODE = {name: i for i, name in enumerate(STATES)}


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
        return self.array.task_cells(self.index)

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
            for index in range(len(array)):
                now = states[(record.id, array.label, index)]
                out.append(Task(record, array, index, now.state, now.job_id, now.end, now.reason))
    return out


@dataclass(frozen=True)
class TaskCells:
    """Every cell of every task, flat: its grid position, its task's place in the task
    list, and the task's state and launch time per cell."""

    cell: np.ndarray
    task: np.ndarray
    state: np.ndarray  # 0 ended, 1 queued, 2 running
    since: np.ndarray


def task_cells(grid: Grid, task_list: list[Task]) -> TaskCells:
    """The cells of the tasks, as arrays (one pass over the arrays, not the cells)."""
    cells, task, state, since = [], [], [], []
    code = {"ended": 0, "queued": 1, "running": 2}
    start = 0
    arrays: dict[int, tuple[ArrayRecord, int, list[int]]] = {}
    for i, t in enumerate(task_list):  # tasks come array by array, in order
        arrays.setdefault(id(t.array), (t.array, i, []))[2].append(code[t.state])
    for array, first, states in arrays.values():
        dataset = grid.dataset_index([array.dataset])[0]
        rows = array.cells
        cells.append(grid.index(np.full(len(rows), dataset), rows[:, 0], rows[:, 1]))
        of = array.task_of_cells()
        task.append(first + of)
        state.append(np.asarray(states, dtype=np.int8)[of])
        since.append(np.full(len(rows), task_list[first].since))
        start += len(rows)
    if not cells:
        empty = np.zeros(0, dtype=np.int64)
        return TaskCells(empty, empty, empty.astype(np.int8), empty.astype(np.float64))
    return TaskCells(*(np.concatenate(x) for x in (cells, task, state, since)))


def state_codes(study: Study, now: Standing, task_list: list[Task]) -> np.ndarray:
    """The state of every cell of the grid, as indices in STATES."""
    out = now.outcomes
    codes = np.full(len(out.grid), _CODE["missing"], dtype=np.int8)
    for name in ("done", "diverged", "failed"):
        codes[(out.status == _status_code(name)) & ~out.stale] = _CODE[name]
    codes[out.stale] = _CODE["stale"]
    along = task_cells(out.grid, task_list)
    live = (along.state > 0) & (along.cell >= 0)
    cell, task = along.cell[live], along.task[live]
    finished = out.finished(study.settings.max_attempts)[cell]
    # A task skips finished cells and has run those with a record newer than its launch
    # (a stale one too: the study changed while the task ran).
    ran = (out.row[cell] >= 0) & (out.written[cell] >= along.since[live])
    pending = ~finished & ~ran
    cell, task = cell[pending], task[pending]
    running = along.state[live][pending] == 2
    codes[cell] = _CODE["queued"]
    _, first = np.unique(task, return_index=True)
    first = first[running[first]]
    codes[cell[first]] = _CODE["running"]
    return codes


def _status_code(name: str) -> int:
    from analysis.schema import STATUSES

    return STATUSES.index(name)


def active_mask(grid: Grid, task_list: list[Task]) -> np.ndarray:
    """Cells that a queued or running task will still run: not to be submitted again."""
    along = task_cells(grid, task_list)
    mask = np.zeros(len(grid), dtype=bool)
    mask[along.cell[(along.state > 0) & (along.cell >= 0)]] = True
    return mask


def cell_states(
    study: Study, now: Standing | None = None, task_list: list[Task] | None = None
) -> dict[Cell, str]:
    """The state of every cell of the study (one of STATES), cell by cell."""
    now = standing(study) if now is None else now
    task_list = tasks(study) if task_list is None else task_list
    codes = state_codes(study, now, task_list)
    cells = now.outcomes.grid.cells(np.arange(len(codes)))
    return {c: STATES[k] for c, k in zip(cells, codes.tolist(), strict=True)}


def active_cells(study: Study, task_list: list[Task] | None = None) -> set[Cell]:
    """Cells that a queued or running task will still run, cell by cell."""
    task_list = tasks(study) if task_list is None else task_list
    grid = Grid.of(study)
    return set(grid.cells(np.flatnonzero(active_mask(grid, task_list))))


@dataclass(frozen=True)
class StudyStatus:
    study: str
    counts: dict[str, dict[str, int]]  # dataset -> state -> cells
    failed: list[dict[str, Any]]  # {cell, attempts, error}, at most the limit
    corrupt: list[dict[str, Any]]  # {file, offset, error}
    gpu_hours_spent: float
    gpu_hours_remaining: float
    tasks_active: int
    failed_total: int = 0
    failed_errors: list[dict[str, Any]] = field(default_factory=list)  # {error, cells}, most first
    stale: list[dict[str, Any]] = field(default_factory=list)  # {dataset, cells, changes, listed}
    stale_total: int = 0
    duplicates: int = 0  # cells with more than one final record (each counted once)
    stopped: list[dict[str, Any]] = field(default_factory=list)  # see stopped_tasks
    cpu_hours_spent: float = 0.0  # of datasets whose tasks ask for no GPU
    cpu_hours_remaining: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "counts": self.counts,
            "failed": self.failed,
            "failed_total": self.failed_total,
            "failed_errors": self.failed_errors,
            "stale": self.stale,
            "stale_total": self.stale_total,
            "corrupt": self.corrupt,
            "duplicates": self.duplicates,
            "stopped": self.stopped,
            "gpu_hours_spent": self.gpu_hours_spent,
            "gpu_hours_remaining": self.gpu_hours_remaining,
            "cpu_hours_spent": self.cpu_hours_spent,
            "cpu_hours_remaining": self.cpu_hours_remaining,
            "tasks_active": self.tasks_active,
        }


def study_status(study: Study, limit: int = LIST_LIMIT) -> StudyStatus:
    """The matrix of cells by dataset and state, GPU-hours (CPU-hours where tasks ask for no
    GPU), the failed and stale cells (`limit` of each by name, 0 for all), and how the tasks
    that left cells unfinished ended."""
    from hpc.scheduling.plan import remaining_hours
    from hpc.study.population import read_population, sample_architectures

    population = read_population(study)
    if population is None or len(population) < study.settings.architectures:
        population = sample_architectures(study, write=False)
    now = standing(study, population)
    task_list = tasks(study, report=True)
    codes = state_codes(study, now, task_list)
    grid = now.outcomes.grid
    per = np.bincount(
        grid.parts(np.arange(len(grid)))[0] * len(STATES) + codes,
        minlength=len(grid.datasets) * len(STATES),
    ).reshape(len(grid.datasets), len(STATES))
    counts = {
        name: dict(zip(STATES, map(int, row), strict=True))
        for name, row in zip(grid.datasets, per, strict=True)
    }
    failed = np.flatnonzero(codes == _CODE["failed"])
    stale = _stale_groups(now, limit)
    gpu_spent, cpu_spent = _spent(study, now)
    gpu_left, cpu_left = remaining_hours(study, population, now.outcomes)
    return StudyStatus(
        study=study.name,
        counts=counts,
        failed=_failed(now, failed[: limit or None]),
        corrupt=[{"file": f, "offset": o, "error": e} for f, o, e in now.index.corrupt],
        gpu_hours_spent=gpu_spent,
        gpu_hours_remaining=gpu_left,
        tasks_active=sum(t.state != "ended" for t in task_list),
        failed_total=len(failed),
        failed_errors=_errors(now, failed),
        stale=stale,
        stale_total=int(now.outcomes.stale.sum()),
        duplicates=int(now.outcomes.duplicates.sum()),
        stopped=stopped_tasks(study, grid, codes, task_list),
        cpu_hours_spent=cpu_spent,
        cpu_hours_remaining=cpu_left,
    )


def _errors(now: Standing, cells: np.ndarray, top: int = 10) -> list[dict[str, Any]]:
    """The last lines of the failed cells' errors, each with how many cells end on it."""
    codes = now.index.records["error"][now.outcomes.row[cells]] if len(cells) else cells
    found, counts = np.unique(codes, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    return [
        {"error": now.index.errors[int(found[i])] if found[i] >= 0 else "", "cells": int(counts[i])}
        for i in order
    ]


def _failed(now: Standing, cells: np.ndarray) -> list[dict[str, Any]]:
    out = now.outcomes
    errors = now.index.records["error"]
    listed = []
    for cell, row in zip(out.grid.cells(cells), out.row[cells].tolist(), strict=True):
        code = int(errors[row])
        listed.append(
            {
                "cell": cell.key,
                "attempts": int(now.index.records["attempts"][row]),
                "error": now.index.errors[code] if code >= 0 else "",
            }
        )
    return listed


def _stale_groups(now: Standing, limit: int) -> list[dict[str, Any]]:
    """Stale cells by dataset and recorded config: how many, what changed, and some names."""
    out, records = now.outcomes, now.index.records
    stale = np.flatnonzero(out.stale)
    if not len(stale):
        return []
    rows = out.row[stale]
    config = records["config"][rows]
    groups = []
    by_key: dict[tuple[str, int], list[int]] = {}
    d, _, _ = out.grid.parts(stale)
    for position, dataset, cfg in zip(stale.tolist(), d.tolist(), config.tolist(), strict=True):
        by_key.setdefault((out.grid.datasets[dataset], cfg), []).append(position)
    changes = {(g.dataset, g.config): g.changes for g in now.stale.groups}
    for (dataset, cfg), positions in sorted(by_key.items()):
        what = list(changes.get((dataset, cfg), ()))
        if dataset in now.stale.arch_changed:
            what.append("the architecture as built")
        shown = out.grid.cells(np.asarray(positions[: limit or None]))
        groups.append(
            {
                "dataset": dataset,
                "cells": len(positions),
                "changes": what,
                "listed": [c.key for c in shown],
            }
        )
    return groups


def _spent(study: Study, now: Standing) -> tuple[float, float]:
    """(GPU-hours, CPU-hours) the recorded cells took, each dataset at what its tasks ask."""
    from hpc.scheduling.plan import device_hours

    out = now.outcomes
    seconds = np.nan_to_num(out.train_seconds, nan=0.0, posinf=0.0, neginf=0.0)
    per = np.bincount(out.grid.parts(np.arange(len(seconds)))[0], seconds, len(study.datasets))
    spent = {"GPU": 0.0, "CPU": 0.0}
    for entry, total in zip(study.datasets, per.tolist(), strict=True):
        kind, hours = device_hours(entry.cluster, total)
        spent[kind] += hours
    return spent["GPU"], spent["CPU"]


def stopped_tasks(
    study: Study, grid: Grid, codes: np.ndarray, task_list: list[Task]
) -> list[dict[str, Any]]:
    """The ended tasks that left cells unfinished (missing, or failed), each with its job id,
    how it ended, its log and those cells: every such cell under the latest task that had it."""
    along = task_cells(grid, task_list)
    known = along.cell >= 0  # cells of datasets the study dropped since are not its own
    latest = np.full(len(grid), -1, dtype=np.int64)
    np.maximum.at(latest, along.cell[known], along.task[known])  # records oldest first
    ended = np.array([t.state == "ended" for t in task_list] + [False])
    unfinished = np.isin(codes, [_CODE["missing"], _CODE["failed"]])
    cells = np.flatnonzero(unfinished & ended[latest])  # latest -1: the False appended
    found = []
    for i in np.unique(latest[cells]).tolist():
        task = task_list[i]
        log = schedulers.of(task.record).task_log(study, task.record, task.array, task.index)
        mine = grid.cells(cells[latest[cells] == i])
        found.append(
            {
                "task": task.job_id or f"{task.record.id} {task.label}.{task.index}",
                "state": task.end or "ended",
                "reason": task.reason,
                "log": str(log) if log is not None else "",
                "cells": [c.key for c in mine],
            }
        )
    return found


def format_status(status: StudyStatus) -> str:
    """The `anysweep status` table, then what failed, what is stale, which tasks ended before
    their cells did, what is unreadable."""
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
    lines += _failed_lines(status) + _stale_lines(status)
    if status.duplicates:
        lines.append(
            f"{status.duplicates:,} cells were trained more than once (two launches); each "
            "counts once, its earliest result"
        )
    if status.stopped:
        lines.append(f"tasks that ended before their cells did ({len(status.stopped)}):")
        lines.extend(_stopped_line(task) for task in status.stopped)
    if status.corrupt:
        lines.append(f"unreadable results ({len(status.corrupt)}), their cells run again:")
        lines.extend(f"  {c['file']} at byte {c['offset']}: {c['error']}" for c in status.corrupt)
    return "\n".join(lines)


def _failed_lines(status: StudyStatus) -> list[str]:
    """The failed cells by the last line of their error, most common first, with the cells
    listed (up to the limit) under their error."""
    if not status.failed_total:
        return []
    lines = [f"failed cells ({status.failed_total:,}), by error:"]
    listed: dict[str, list[str]] = {}
    for f in status.failed:
        listed.setdefault(f["error"], []).append(f"{f['cell']} (attempt {f['attempts']})")
    for group in status.failed_errors:
        lines.append(f"  {group['cells']:>7,}  {group['error'] or '(no error recorded)'}")
        if listed.get(group["error"]):
            lines.append("           " + ", ".join(listed[group["error"]]))
    shown = sum(g["cells"] for g in status.failed_errors)
    if status.failed_total > shown:
        lines.append(f"  {status.failed_total - shown:>7,}  (other errors)")
    if status.failed_total > len(status.failed):
        lines.append(
            f"  {len(status.failed):,} of {status.failed_total:,} cells named; "
            "`anysweep status --limit 0` names them all"
        )
    return lines


def _stale_lines(status: StudyStatus) -> list[str]:
    if not status.stale_total:
        return []
    lines = [
        f"stale cells ({status.stale_total:,}): trained with what study.toml no longer says; "
        "revert it, or `anysweep launch --retrain-stale`"
    ]
    for group in status.stale:
        lines.append(
            f"  {group['dataset']}: {group['cells']:,} cells, {'; '.join(group['changes'])}"
        )
        more = group["cells"] - len(group["listed"])
        lines.append(
            "    " + ", ".join(group["listed"]) + (f" ... and {more:,} more" if more > 0 else "")
        )
    return lines


def _stopped_line(task: dict[str, Any]) -> str:
    cells = task["cells"]
    listed = ", ".join(cells[:4]) + (f" and {len(cells) - 4} more" if len(cells) > 4 else "")
    how = task["state"] + (f" ({task['reason']})" if task["reason"] else "")
    log = f"; log {task['log']}" if task["log"] else "; no log"
    return f"  {task['task']} {how}: {len(cells)} cell(s) unfinished: {listed}{log}"


@dataclass(frozen=True)
class CellLogs:
    """What was logged of a cell: each record's log (oldest first), the log of a run in
    progress, and the scheduler's log of the latest task that ran it."""

    records: list[str]
    live: Path | None
    task_log: Path | None


def cell_logs(study: Study, cell_text: str) -> CellLogs:
    """A cell's logs: from its records, its running log file, its task's scheduler log."""
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
    return CellLogs(_record_logs(study, cell), own if own.exists() else None, task_log)


def _record_logs(study: Study, cell: Cell) -> list[str]:
    from analysis.schema import decode_record
    from hpc.study import packs

    now = standing(study)
    records = now.index.records
    position = now.index.datasets.index(cell.dataset) if cell.dataset in now.index.datasets else -1
    mine = np.flatnonzero(
        (records["dataset"] == position)
        & (records["arch_id"] == cell.arch_id)
        & (records["seed"] == cell.seed)
        & (records["length"] > 0)  # one-cell files keep no log
    )
    mine = mine[np.argsort(records["written"][mine], kind="stable")]
    logs = []
    for path, offset in records_of(now.index, mine):
        payload = packs.payloads(study.layout.root / path, [offset])[offset]
        logs.append(decode_record(payload)[1])
    return logs


def _task_of(record: LaunchRecord, cell: Cell) -> tuple[ArrayRecord, int] | None:
    """The array and task index of a record that ran `cell`, if one did."""
    for array in record.arrays:
        if array.dataset != cell.dataset:
            continue
        hit = np.flatnonzero((array.cells[:, 0] == cell.arch_id) & (array.cells[:, 1] == cell.seed))
        if len(hit):
            return array, int(array.task_of_cells()[hit[0]])
    return None
