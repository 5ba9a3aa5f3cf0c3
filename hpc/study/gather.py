"""Records into columns for results.h5: the records a collect needs, read pack by pack
(in worker processes when there are many), decoded through analysis.schema and turned
into arrays with each repeated string kept once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.schema import (
    CELL_COLUMNS,
    CURVES,
    STRING_FIELDS,
    CorruptResultError,
    DatasetInfo,
    DatasetTable,
    decode_record_values,
    read_cell,
)
from hpc.study import packs

RECORD_SOURCE = ("pack", "offset", "crc")  # where a row's record is (results.h5's records/)
PARALLEL_RECORDS = 20_000  # from this many records on, packs are read by worker processes
_FLOAT_COLUMNS = (
    "top1_err",
    "top5_err",
    "best_top1_err",
    "train_seconds",
    "data_seconds",
    "images_per_s",
)


@dataclass(frozen=True)
class Job:
    """The records to read of one file: a pack (at these offsets) or a one-cell file."""

    path: str
    offsets: tuple[int, ...]
    legacy: bool = False


@dataclass
class Columns:
    """Decoded records as columns, rows in the order asked for; `failed` lists (path,
    offset, why) of records that could not be read, which have no row."""

    keys: list[tuple[str, int]] = field(default_factory=list)  # (path, offset) per row
    values: dict[str, list[Any]] = field(default_factory=dict)
    curves: dict[str, list[np.ndarray]] = field(default_factory=dict)
    failed: list[tuple[str, int, str]] = field(default_factory=list)
    # One object per distinct string: repeated recipes and versions cost their size once,
    # in memory and when handed between processes.
    interned: dict[str, str] = field(default_factory=dict, repr=False)

    def add(self, key: tuple[str, int], values: dict[str, Any], curves: dict[str, Any]) -> None:
        self.keys.append(key)
        for name in CELL_COLUMNS:
            value = values.get(name, "")
            if name in STRING_FIELDS:
                value = self.interned.setdefault(str(value), str(value))
            self.values.setdefault(name, []).append(value)
        for name in CURVES:
            self.curves.setdefault(name, []).append(np.asarray(curves.get(name, ()), np.float32))

    def arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The columns as arrays (strings as objects, each distinct one once) and the curves
        as (rows, epochs) float32 matrices, NaN-padded."""
        rows = len(self.keys)
        columns: dict[str, np.ndarray] = {}
        for name in CELL_COLUMNS:
            values = self.values.get(name, [])
            if name in STRING_FIELDS:
                column = np.empty(rows, dtype=object)
                column[:] = [self.interned.setdefault(v, v) for v in values]
                columns[name] = column
            elif name in _FLOAT_COLUMNS:
                columns[name] = np.asarray(values, dtype=np.float64).reshape(rows)
            else:
                columns[name] = np.asarray(values, dtype=np.int64).reshape(rows)
        curves = {name: pad(self.curves.get(name, []), rows) for name in CURVES}
        return columns, curves


def pad(rows: Sequence[np.ndarray], count: int) -> np.ndarray:
    """Rows of different lengths as one NaN-padded float32 matrix."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((count, width), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _read_job(root: Path, job: Job, out: Columns) -> None:
    path = root / job.path
    if job.legacy:
        try:
            cell = read_cell(path)
        except (CorruptResultError, OSError) as exc:
            out.failed.append((job.path, 0, str(exc)))
            return
        values = {name: getattr(cell, name) for name in CELL_COLUMNS}
        out.add((job.path, 0), values, cell.curves)
        return
    try:
        found = packs.payloads(path, job.offsets)
    except (CorruptResultError, OSError) as exc:
        out.failed.extend((job.path, o, str(exc)) for o in job.offsets)
        return
    for offset in job.offsets:
        try:
            values, curves = decode_record_values(found[offset])
        except CorruptResultError as exc:
            out.failed.append((job.path, offset, str(exc)))
            continue
        out.add((job.path, offset), values, curves)


def _read_jobs(root: Path, jobs: Sequence[Job]) -> Columns:
    out = Columns()
    for job in jobs:
        _read_job(root, job, out)
    return out


def _merge(parts: Sequence[Columns]) -> Columns:
    out = Columns()
    for part in parts:
        out.interned.update(part.interned)
        out.keys += part.keys
        out.failed += part.failed
        for name, values in part.values.items():
            out.values.setdefault(name, []).extend(values)
        for name, rows in part.curves.items():
            out.curves.setdefault(name, []).extend(rows)
    return out


def read_records(root: Path, jobs: Sequence[Job], progress: bool = False) -> Columns:
    """The records of the jobs as columns; many are read by one process per core."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    total = sum(len(j.offsets) for j in jobs)
    workers = min(os.cpu_count() or 1, 16)
    if total < PARALLEL_RECORDS or workers < 2:
        return _read_jobs(root, jobs)
    batches = [list(jobs[i :: workers * 4]) for i in range(workers * 4)]
    with ProcessPoolExecutor(workers) as pool:
        futures = pool.map(_read_jobs, [root] * len(batches), batches)
        parts = list(
            tqdm(futures, total=len(batches), desc="reading records", disable=not progress)
        )
    return _merge(parts)


def take(table: DatasetTable, rows: np.ndarray) -> DatasetTable:
    """Some rows of a table."""
    return DatasetTable(
        info=table.info,
        columns={k: v[rows] for k, v in table.columns.items()},
        curves={k: v[rows] for k, v in table.curves.items()},
        records={k: v[rows] for k, v in table.records.items()},
    )


def concat(info: DatasetInfo, parts: Sequence[DatasetTable]) -> DatasetTable:
    """Tables of one dataset as one, in (arch_id, seed) order; curves padded to the widest."""
    parts = [p for p in parts if len(p)] or list(parts[:1])
    columns = {k: np.concatenate([p.columns[k] for p in parts]) for k in CELL_COLUMNS}
    curves = {}
    for name in CURVES:
        width = max(p.curves[name].shape[1] for p in parts)
        curves[name] = np.concatenate(
            [
                np.pad(
                    p.curves[name].astype(np.float32),
                    ((0, 0), (0, width - p.curves[name].shape[1])),
                    constant_values=np.nan,
                )
                for p in parts
            ]
        )
    records = {k: np.concatenate([p.records[k] for p in parts]) for k in RECORD_SOURCE}
    order = np.lexsort((columns["seed"], columns["arch_id"]))
    return take(DatasetTable(info, columns, curves, records), order)
