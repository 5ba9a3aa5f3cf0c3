"""What each cell of a study is doing: done, running, queued, failed, diverged or missing.

Reads the launch records under jobs/, the result files, and the scheduler once (one `squeue`
for all of a study's jobs, however many); never imports torch or ffcv.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.study.results import Cell, ResultSummary, is_finished, scan_results, study_cells
from hpc.study.spec import Study

STATES = ("done", "running", "queued", "failed", "diverged", "missing")
RECORD_FILE = "record.json"
# squeue states of a task that will still run (or runs) its cells.
RUNNING_STATES = ("RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING")
QUEUED_STATES = (
    "PENDING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SUSPENDED",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
    "STOPPED",
)


class SchedulerError(RuntimeError):
    """The scheduler could not be asked; planning on a guess would submit cells twice."""


@dataclass(frozen=True)
class Task:
    """One array task (or local chunk) of a record and what the scheduler says of it."""

    record: str  # the record's id, e.g. L0003
    label: str  # the array's label, e.g. fashion_mnist-0
    index: int  # the task's index in its array
    dataset: str
    cells: tuple[tuple[int, int], ...]
    state: str  # queued, running or ended
    since: float  # when the record was written (results older than this predate the task)
    job_id: str  # scheduler id ("123_4"), the local lane's pid, or "" when not known


def job_prefix(study: Study) -> str:
    """The prefix of every job name of this study: readable, and unique per study folder."""
    digest = hashlib.sha1(str(study.root).encode()).hexdigest()[:6]
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", study.name)[:24]
    return f"anysweep-{slug}-{digest}"


def job_name(study: Study, record: str, label: str) -> str:
    return f"{job_prefix(study)}.{record}.{label}"


def read_records(study: Study) -> list[dict[str, Any]]:
    """Every launch and sbatch record of the study, oldest first."""
    jobs = study.root / "jobs"
    records = []
    for path in sorted(jobs.glob(f"*/{RECORD_FILE}")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a record being written; the lock keeps launches from racing on it
    return sorted(records, key=lambda r: (r["created_ts"], r["id"]))


def squeue_states(study: Study) -> dict[tuple[str, int], tuple[str, str]]:
    """{(job name, array task index): (squeue state, job id)} for the study's jobs: one call."""
    argv = ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%j|%T"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SchedulerError(f"could not run squeue: {exc}") from None
    if done.returncode != 0:
        raise SchedulerError(f"squeue failed ({done.returncode}): {done.stderr.strip()}")
    prefix = job_prefix(study) + "."
    states: dict[tuple[str, int], tuple[str, str]] = {}
    for line in done.stdout.splitlines():
        job_id, _, rest = line.strip().partition("|")
        name, _, state = rest.rpartition("|")
        if not name.startswith(prefix):
            continue
        _, _, task = job_id.partition("_")
        states[(name, int(task) if task.isdigit() else 0)] = (state.strip(), job_id)
    return states


def process_alive(pid: int, start: int) -> bool:
    """Whether a process we started still runs: same pid and start time, not a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if not Path("/proc/self/stat").exists():  # no procfs: fall back to a signal probe
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == start


def process_start(pid: int) -> int:
    """A process's start time (clock ticks after boot), which tells a reused pid apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(text[text.rindex(")") + 2 :].split()[19])


def tasks(study: Study, records: list[dict[str, Any]] | None = None) -> list[Task]:
    """Every task of every record with its state now; `squeue` runs once when any record is
    a Slurm one."""
    records = read_records(study) if records is None else records
    slurm = None
    if any(r["cluster"] in ("slurm", "sbatch") for r in records):
        slurm = squeue_states(study)
    out = []
    for record in records:
        lanes_alive = any(process_alive(p["pid"], p["start"]) for p in record.get("lanes", []))
        folder = study.root / "jobs" / record["id"]
        for array in record["arrays"]:
            for index, task in enumerate(array["tasks"]):
                if record["cluster"] == "local":
                    state, job_id = _local_state(folder, task["chunk"], lanes_alive)
                else:
                    found = (slurm or {}).get((array["job_name"], index))
                    state = "ended" if found is None else _slurm_state(found[0])
                    job_id = (
                        found[1]
                        if found
                        else (f"{array['job_id']}_{index}" if array.get("job_id") else "")
                    )
                out.append(
                    Task(
                        record=record["id"],
                        label=array["label"],
                        index=index,
                        dataset=array["dataset"],
                        cells=tuple(tuple(c) for c in task["cells"]),
                        state=state,
                        since=record["created_ts"],
                        job_id=job_id,
                    )
                )
    return out


def _slurm_state(state: str) -> str:
    if state in RUNNING_STATES:
        return "running"
    if state in QUEUED_STATES:
        return "queued"
    return "ended"


def _local_state(folder: Path, chunk: str, lanes_alive: bool) -> tuple[str, str]:
    """A local chunk is queued while its manifest waits in queue/, running once a lane has
    moved it to claimed/ (named after the lane), ended in done/ or when no lane lives."""
    if not lanes_alive:
        return "ended", ""
    if (folder / "queue" / f"{chunk}.json").exists():
        return "queued", ""
    for path in (folder / "claimed").glob(f"{chunk}.lane*.json"):
        return "running", path.name.rsplit(".", 2)[1]
    return "ended", ""


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
        if summary is not None and summary.status in ("done", "diverged"):
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
    gpu_hours_spent: float
    gpu_hours_remaining: float
    tasks_active: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "counts": self.counts,
            "failed": self.failed,
            "corrupt": self.corrupt,
            "gpu_hours_spent": self.gpu_hours_spent,
            "gpu_hours_remaining": self.gpu_hours_remaining,
            "tasks_active": self.tasks_active,
        }


def study_status(study: Study) -> StudyStatus:
    """The matrix of cells by dataset and state, GPU-hours, and what failed."""
    from hpc.scheduling.plan import remaining_gpu_hours
    from hpc.study.population import read_population, sample_architectures

    results = scan_results(study)
    task_list = tasks(study)
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
    spent = sum(
        r.train_seconds * max(study.dataset(c.dataset).cluster.gpus, 1) / 3600
        for c, r in results.items()
        if r.train_seconds == r.train_seconds  # not NaN
    )
    population = read_population(study)
    if population is None or len(population) < study.settings.architectures:
        population = sample_architectures(study, write=False)
    return StudyStatus(
        study=study.name,
        counts=counts,
        failed=failed,
        corrupt=corrupt,
        gpu_hours_spent=spent,
        gpu_hours_remaining=remaining_gpu_hours(study, population, results),
        tasks_active=sum(t.state != "ended" for t in task_list),
    )


def format_status(status: StudyStatus) -> str:
    """The `anysweep status` table."""
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
        f"GPU-hours: {status.gpu_hours_spent:,.2f} spent, about {status.gpu_hours_remaining:,.2f} "
        f"remaining; {status.tasks_active} tasks queued or running"
    )
    if status.failed:
        lines.append(f"failed cells ({len(status.failed)}):")
        lines.extend(
            f"  {f['cell']} (attempt {f['attempts']}): {f['error']}" for f in status.failed
        )
    if status.corrupt:
        lines.append(f"unreadable result files ({len(status.corrupt)}), to be run again:")
        lines.extend(f"  {c['cell']}: {c['error']}" for c in status.corrupt)
    return "\n".join(lines)


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
    own = study.root / "logs" / cell.dataset / f"{cell.arch_id}-s{cell.seed}.log"
    task_log = None
    for record in reversed(read_records(study)):
        task_log = _task_log(study, record, cell)
        if task_log is not None:
            break
    return (own if own.exists() else None), task_log


def _task_log(study: Study, record: dict[str, Any], cell: Cell) -> Path | None:
    folder = study.root / "jobs" / record["id"]
    for array in record["arrays"]:
        for index, task in enumerate(array["tasks"]):
            if array["dataset"] != cell.dataset or [cell.arch_id, cell.seed] not in task["cells"]:
                continue
            if record["cluster"] == "slurm":
                # submitit submits a single chunk as a plain job, not an array.
                job = array["job_id"] if len(array["tasks"]) == 1 else f"{array['job_id']}_{index}"
                path = folder / "slurm" / f"{job}_0_log.out"
                return path if path.exists() else None
            if record["cluster"] == "local":
                for done in (
                    *folder.glob(f"claimed/{task['chunk']}.lane*.json"),
                    *folder.glob(f"done/{task['chunk']}.lane*.json"),
                ):
                    lane = int(done.name.rsplit(".", 2)[1].removeprefix("lane"))
                    pid = record["lanes"][lane]["pid"]
                    path = folder / "local" / f"{pid}_0_log.out"
                    return path if path.exists() else None
                return None
            # sbatch: Slurm names the log by job id, unknown here; the script's first line
            # names the manifest folder.
            marker = str(folder / array["label"])
            logs = sorted(
                (study.root / "logs" / "slurm").glob(f"*_{index}.out"),
                key=lambda p: p.stat().st_mtime,
                reverse=True,
            )
            for path in logs:
                with open(path, errors="replace") as handle:
                    if marker in handle.readline():
                        return path
            return None
    return None
