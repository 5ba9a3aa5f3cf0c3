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
    rows: tuple[int, ...] = ()  # what each record is to the caller (its position), per offset


_NUMBERS = tuple(c for c in CELL_COLUMNS if c not in STRING_FIELDS)
_TEXTS = tuple(c for c in CELL_COLUMNS if c in STRING_FIELDS)


@dataclass
class Columns:
    """Decoded records as columns, rows in the order read: `rows` gives each row's position
    (as its Job said); `failed` lists (path, offset, why) of records that could not be read,
    which have no row. Text is kept as codes into one table per column (each distinct
    string once), curves as NaN-padded float32 matrices: blocks of arrays, cheap to hand
    from a worker process and to join."""

    rows: list[int] = field(default_factory=list)
    numbers: dict[str, list[Any]] = field(default_factory=lambda: {n: [] for n in _NUMBERS})
    codes: dict[str, list[int]] = field(default_factory=lambda: {n: [] for n in _TEXTS})
    tables: dict[str, dict[str, int]] = field(default_factory=lambda: {n: {} for n in _TEXTS})
    curves: dict[str, list[Any]] = field(default_factory=lambda: {n: [] for n in CURVES})
    failed: list[tuple[str, int, str]] = field(default_factory=list)

    def add(self, row: int, values: dict[str, Any], curves: dict[str, Any]) -> None:
        self.rows.append(row)
        for name in _NUMBERS:
            self.numbers[name].append(values.get(name, 0))
        for name in _TEXTS:
            table = self.tables[name]
            self.codes[name].append(table.setdefault(str(values.get(name, "")), len(table)))
        for name in CURVES:
            self.curves[name].append(curves.get(name, ()))

    def block(self) -> Block:
        """The columns as arrays."""
        count = len(self.rows)
        numbers = {
            name: np.asarray(values, dtype=np.float64 if name in _FLOAT_COLUMNS else np.int64)
            for name, values in self.numbers.items()
        }
        codes = {name: np.asarray(v, dtype=np.int32) for name, v in self.codes.items()}
        tables = {name: list(table) for name, table in self.tables.items()}
        curves = {name: pad(rows, count) for name, rows in self.curves.items()}
        return Block(
            np.asarray(self.rows, dtype=np.int64), numbers, codes, tables, curves, self.failed
        )


@dataclass
class Block:
    """Columns as arrays (see Columns)."""

    rows: np.ndarray
    numbers: dict[str, np.ndarray]
    codes: dict[str, np.ndarray]
    tables: dict[str, list[str]]
    curves: dict[str, np.ndarray]
    failed: list[tuple[str, int, str]]

    def arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The columns (text as objects, each distinct string one object) and the curves."""
        columns = dict(self.numbers)
        for name, codes in self.codes.items():
            table = np.asarray(self.tables[name] + [""], dtype=object)
            columns[name] = table[codes] if len(codes) else np.zeros(0, dtype=object)
        return columns, self.curves


def join(blocks: Sequence[Block]) -> Block:
    """Blocks as one, in order."""
    rows = np.concatenate([b.rows for b in blocks])
    numbers = {n: np.concatenate([b.numbers[n] for b in blocks]) for n in _NUMBERS}
    codes, tables = {}, {}
    for name in _TEXTS:
        merged: dict[str, int] = {}
        parts = []
        for b in blocks:
            remap = np.array([merged.setdefault(s, len(merged)) for s in b.tables[name]], np.int32)
            parts.append(remap[b.codes[name]] if len(remap) else b.codes[name])
        codes[name], tables[name] = np.concatenate(parts), list(merged)
    curves = {}
    for name in CURVES:
        width = max(b.curves[name].shape[1] for b in blocks)
        curves[name] = np.concatenate([_widen(b.curves[name], width) for b in blocks])
    failed = [f for b in blocks for f in b.failed]
    return Block(rows, numbers, codes, tables, curves, failed)


def _widen(matrix: np.ndarray, width: int) -> np.ndarray:
    extra = width - matrix.shape[1]
    return np.pad(matrix, ((0, 0), (0, extra)), constant_values=np.nan) if extra else matrix


def pad(rows: Sequence[Any], count: int) -> np.ndarray:
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
        out.add(job.rows[0] if job.rows else 0, values, cell.curves)
        return
    try:
        found = packs.payloads(path, job.offsets)
    except (CorruptResultError, OSError) as exc:
        out.failed.extend((job.path, o, str(exc)) for o in job.offsets)
        return
    rows = job.rows or tuple(range(len(job.offsets)))
    for offset, row in zip(job.offsets, rows, strict=True):
        try:
            values, curves = decode_record_values(found[offset])
        except CorruptResultError as exc:
            out.failed.append((job.path, offset, str(exc)))
            continue
        out.add(row, values, curves)


def _read_jobs(root: Path, jobs: Sequence[Job]) -> Block:
    out = Columns()
    for job in jobs:
        _read_job(root, job, out)
    return out.block()


def read_records(root: Path, jobs: Sequence[Job], progress: bool = False) -> Block:
    """The records of the jobs as columns; many are read by one process per core."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    total = sum(len(j.offsets) for j in jobs)
    workers = min(os.cpu_count() or 1, 16)
    if total < PARALLEL_RECORDS or workers < 2:
        return _read_jobs(root, jobs)
    batches = [list(jobs[i :: workers * 4]) for i in range(workers * 4)]
    with ProcessPoolExecutor(workers) as pool:
        futures = pool.map(_read_jobs, [root] * len(batches), batches)
        blocks = list(
            tqdm(futures, total=len(batches), desc="reading records", disable=not progress)
        )
    return join(blocks)


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
    seeds = int(columns["seed"].max(initial=0)) + 1
    order = np.argsort(columns["arch_id"].astype(np.int64) * seeds + columns["seed"], kind="stable")
    return take(DatasetTable(info, columns, curves, records), order)
