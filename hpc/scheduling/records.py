"""Launch records: what each launch (or sbatch rendering) submitted, kept as
jobs/<id>/record.json for status, cancel and logs to read. The one module that writes and
reads them; what only one scheduler needs (a local launch's lanes) rides along in `own`,
which that scheduler alone reads.

An array keeps its tasks' cells compact, as one flat list of arch ids and seeds and the
bounds of each task in it, so that a launch of 50,000 tasks reads back in a fraction of a
second; records written before keep a list of tasks and still read.

Job names tie the queue to the study: `anysweep-<study>-<digest of its folder>.<record>.<array>`.
A task's records go to the pack named `<record>.<array>.<task index>` (`task_pack`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.files import write_json
from hpc.provenance import now
from hpc.scheduling.plan import Array
from hpc.study.results import ArchSeed
from hpc.study.spec import Study

RECORD_KEYS = ("id", "cluster", "created", "created_ts", "arrays")


@dataclass(frozen=True)
class TaskRecord:
    """One array task: the chunk it runs (its manifest's name) and that chunk's cells."""

    chunk: str
    cells: tuple[ArchSeed, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"chunk": self.chunk, "cells": [list(c) for c in self.cells]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskRecord:
        return cls(data["chunk"], tuple((int(a), int(s)) for a, s in data["cells"]))


@dataclass(frozen=True, eq=False)
class ArrayRecord:
    """One array of a launch: its dataset, job name, Slurm job id (None where there is none
    to know: local lanes, scripts not yet submitted) and its tasks' cells: task i runs
    `cells[bounds[i]:bounds[i + 1]]` ((arch_id, seed) rows) and is named `chunks[i]`."""

    label: str
    dataset: str
    job_name: str
    job_id: str | None
    cells: np.ndarray  # (n, 2) int64: arch_id, seed
    bounds: np.ndarray  # (tasks + 1,) int64
    chunks: tuple[str, ...] = ()  # task names when not `<label>.<index>`

    @classmethod
    def of_tasks(
        cls,
        label: str,
        dataset: str,
        job_name: str,
        job_id: str | None,
        tasks: Sequence[TaskRecord],
    ) -> ArrayRecord:
        cells = np.array([c for t in tasks for c in t.cells], dtype=np.int64).reshape(-1, 2)
        bounds = np.concatenate(([0], np.cumsum([len(t.cells) for t in tasks]))).astype(np.int64)
        names = tuple(t.chunk for t in tasks)
        default = tuple(f"{label}.{i}" for i in range(len(tasks)))
        return cls(
            label, dataset, job_name, job_id, cells, bounds, () if names == default else names
        )

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def chunk(self, index: int) -> str:
        return self.chunks[index] if self.chunks else f"{self.label}.{index}"

    def task_cells(self, index: int) -> tuple[ArchSeed, ...]:
        rows = self.cells[self.bounds[index] : self.bounds[index + 1]]
        return tuple((int(a), int(s)) for a, s in rows.tolist())

    @functools.cached_property
    def tasks(self) -> tuple[TaskRecord, ...]:
        return tuple(TaskRecord(self.chunk(i), self.task_cells(i)) for i in range(len(self)))

    def task_of_cells(self) -> np.ndarray:
        """The task index of each row of `cells`."""
        return np.repeat(np.arange(len(self)), np.diff(self.bounds))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "label": self.label,
            "dataset": self.dataset,
            "job_name": self.job_name,
            "job_id": self.job_id,
            "cells": self.cells.reshape(-1).tolist(),
            "bounds": self.bounds.tolist(),
        }
        if self.chunks:
            out["chunks"] = list(self.chunks)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArrayRecord:
        if "tasks" in data:  # a record from before compact arrays
            tasks = [TaskRecord.from_dict(t) for t in data["tasks"]]
            return cls.of_tasks(
                data["label"], data["dataset"], data["job_name"], data.get("job_id"), tasks
            )
        return cls(
            data["label"],
            data["dataset"],
            data["job_name"],
            data.get("job_id"),
            np.asarray(data["cells"], dtype=np.int64).reshape(-1, 2),
            np.asarray(data["bounds"], dtype=np.int64),
            tuple(data.get("chunks", ())),
        )


@dataclass(frozen=True)
class LaunchRecord:
    """What one launch submitted, and through which scheduler (the file's `cluster` key)."""

    id: str  # L0001 (launch) or S0001 (sbatch)
    scheduler: str
    created: str
    created_ts: float  # results older than this predate the launch's tasks
    arrays: tuple[ArrayRecord, ...]
    own: dict[str, Any] = field(default_factory=dict)  # the scheduler's own keys

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cluster": self.scheduler,
            "created": self.created,
            "created_ts": self.created_ts,
            "arrays": [a.to_dict() for a in self.arrays],
            **self.own,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LaunchRecord:
        own = {k: v for k, v in data.items() if k not in RECORD_KEYS}
        arrays = tuple(ArrayRecord.from_dict(a) for a in data["arrays"])
        return cls(
            data["id"], data["cluster"], data["created"], float(data["created_ts"]), arrays, own
        )


def job_prefix(study: Study) -> str:
    """The prefix of every job name of this study: readable, and unique per study folder."""
    digest = hashlib.sha1(str(study.root).encode()).hexdigest()[:6]
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", study.name)[:24]
    return f"anysweep-{slug}-{digest}"


def job_name(study: Study, record: str, label: str) -> str:
    return f"{job_prefix(study)}.{record}.{label}"


def next_record_id(study: Study, kind: str) -> str:
    """The next free record id of a kind: L for launches, S for sbatch renderings."""
    taken = study.layout.record_ids(kind)
    number = max((int(name[1:]) for name in taken if name[1:].isdigit()), default=0) + 1
    return f"{kind}{number:04d}"


def task_pack(record_id: str, label: str, index: int) -> str:
    """The name of the pack a task's records go to."""
    return f"{record_id}.{label}.{index}"


def planned_arrays(study: Study, record_id: str, arrays: Sequence[Array]) -> list[ArrayRecord]:
    """A plan's arrays as a record lists them: label, dataset, job name, each task's cells;
    no job ids yet."""
    out = []
    for a in arrays:
        cells = np.array([c for chunk in a.chunks for c in chunk.cells], dtype=np.int64)
        sizes = [len(chunk.cells) for chunk in a.chunks]
        bounds = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        name = job_name(study, record_id, a.label)
        out.append(ArrayRecord(a.label, a.dataset, name, None, cells.reshape(-1, 2), bounds))
    return out


def write_record(
    study: Study,
    record_id: str,
    scheduler: str,
    arrays: Sequence[ArrayRecord],
    own: dict[str, Any] | None = None,
) -> LaunchRecord:
    """Write jobs/<record_id>/record.json, stamped now; returns the record."""
    record = LaunchRecord(record_id, scheduler, now(), time.time(), tuple(arrays), own or {})
    write_json(study.layout.record_file(record_id), record.to_dict())
    return record


def read_records(study: Study) -> list[LaunchRecord]:
    """Every launch and sbatch record of the study, oldest first."""
    records = []
    for path in study.layout.record_files():
        try:
            records.append(LaunchRecord.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # a record being written; the lock keeps launches from racing on it
    return sorted(records, key=lambda r: (r.created_ts, r.id))
