"""`anysweep collect`: the cells' records into results.h5 through analysis.schema.

One writer at a time (a lock), atomic replacement, idempotent (unchanged inputs leave
results.h5 untouched) and incremental: rows whose record has not changed since the last
collect are taken from the previous results.h5, so only new records are read. A stale cell
(trained with what the study no longer says) goes to /stale, apart from what analysis reads;
a record that cannot be read is reported and never merged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.schema import DatasetTable, Results, read_results, read_root_attr, write_results
from hpc.study import gather
from hpc.study.datasets import prepared_manifest, results_info
from hpc.study.layout import study_lock
from hpc.study.population import Population, arch_groups, load_population
from hpc.study.results import Standing, standing
from hpc.study.scores import files_stamp, score_tables
from hpc.study.spec import Study

REFERENCE_RESOLUTION = 224  # the /architectures complexity columns are counted here
REFERENCE_CLASSES = 1000


@dataclass(frozen=True)
class Collected:
    """What a collect did."""

    path: Path
    cells: int  # cells in results.h5 (stale ones not counted)
    skipped: tuple[str, ...]  # "what: why" for records not merged
    written: bool  # False: results.h5 was up to date
    stale: int = 0  # cells kept apart in /stale
    read: int = 0  # records read from packs (the rest came from the previous results.h5)


def architecture_columns(population: Population) -> dict[str, np.ndarray]:
    """/architectures: one row per id; per-stage columns padded with 0 to the deepest network."""
    from anynet.complexity import complexity_batch

    archs, sampled = population.archs, population.sampled
    stages = max((a.num_stages for a in archs), default=0)

    def per_stage(values: list[tuple], dtype: Any) -> np.ndarray:
        out = np.zeros((len(values), stages), dtype=dtype)
        for i, row in enumerate(values):
            out[i, : len(row)] = row
        return out

    counts = np.zeros((3, len(archs)), dtype=np.int64)  # flops, params, acts at 224 px
    for group in arch_groups(archs):
        counts[:, group.ids] = complexity_batch(
            *group.stages,
            stem=group.stem,
            stem_width=group.stem_width,
            se_ratio=group.se_ratio,
            resolution=REFERENCE_RESOLUTION,
            num_classes=REFERENCE_CLASSES,
        )
    return {
        "id": np.arange(len(archs), dtype=np.int64),
        "name": np.array([a.name for a in archs], dtype=object),
        "num_stages": np.array([a.num_stages for a in archs], dtype=np.int64),
        "depths": per_stage([a.depths for a in archs], np.int64),
        "widths": per_stage([a.widths for a in archs], np.int64),
        "bottleneck_ratios": per_stage([a.bottleneck_ratios for a in archs], np.float64),
        "group_widths": per_stage([a.group_widths for a in archs], np.int64),
        "sampled_widths": per_stage([s.widths for s in sampled], np.int64),
        "sampled_group_widths": per_stage([s.group_widths for s in sampled], np.int64),
        "stem": np.array([a.stem for a in archs], dtype=object),
        "stem_width": np.array([a.stem_width for a in archs], dtype=np.int64),
        "se_ratio": np.array([a.se_ratio for a in archs], dtype=np.float64),
        "flops": counts[0],
        "params": counts[1],
        "acts": counts[2],
    }


def _inputs(study: Study, now: Standing) -> str:
    """Changes when any input of results.h5 changes: the records that count (and which are
    stale), architectures, study.toml, the prepared datasets' manifests (where /datasets
    takes its sizes and classes) and the score files."""
    digest = hashlib.sha256(study.source.encode())
    architectures = study.layout.architectures
    stat = architectures.stat()
    digest.update(f"{architectures.name}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    for entry in study.datasets:
        manifest = prepared_manifest(study, entry)
        try:
            stat = manifest.stat()
            digest.update(f"{manifest.name}:{stat.st_mtime_ns}:{stat.st_size}".encode())
        except FileNotFoundError:
            digest.update(f"{manifest.name}:absent".encode())
    out, records = now.outcomes, now.index.records
    rows = out.row[out.row >= 0]
    for name in ("pack", "offset", "crc"):
        digest.update(np.ascontiguousarray(records[name][rows]).tobytes())
    digest.update(out.stale.tobytes() + np.asarray(out.row >= 0).tobytes())
    digest.update("\n".join(now.index.pack_paths).encode())
    digest.update(repr(now.index.corrupt).encode())
    digest.update(files_stamp(study).encode())
    return digest.hexdigest()


def collect(study: Study, *, progress: bool = False) -> Collected:
    """Merge every readable record of the study's cells into STUDY/results.h5."""
    from hpc.provenance import now as clock

    population = load_population(study)
    target = study.layout.results_file
    with study_lock(study.layout, "collect"):
        now = standing(study, population)
        inputs = _inputs(study, now)
        corrupt = tuple(f"{f} at byte {o}: {why}" for f, o, why in now.index.corrupt)
        out = now.outcomes
        kept = int((out.row >= 0).sum())
        stale = int(out.stale.sum())
        if target.exists() and read_root_attr(target, "inputs") == inputs:
            return Collected(target, kept - stale, corrupt, False, stale)
        previous = _previous(target)
        tables, aside, skipped, read = _tables(study, now, previous, progress)
        attrs = {
            "created": clock(),
            "study": study.name,
            "reference": study.reference,
            "software": _software(),
            "study_toml": study.source,
            # A record that could not be read now: the next collect reads it again.
            "inputs": f"{inputs}+unread" if skipped else inputs,
        }
        write_results(
            target,
            architectures=architecture_columns(population),
            datasets=[results_info(study, entry) for entry in study.datasets],
            tables=tables,
            stale=aside,
            attrs=attrs,
            scores=score_tables(study),
        )
    cells = sum(len(t) for t in tables.values())
    return Collected(
        target, cells, corrupt + skipped, True, sum(len(t) for t in aside.values()), read
    )


def _previous(path: Path) -> Results | None:
    """The last results.h5, when it says where its rows came from (version 3)."""
    try:
        results = read_results(path)
    except (OSError, ValueError, KeyError):
        return None
    return results if int(results.attrs.get("schema_version", 0)) >= 3 else None


@dataclass(frozen=True)
class Wanted:
    """The records that count, one per cell that has one: where each is (its pack's code in
    the index, path, offset, checksum), whether its cell is stale, and its cell's dataset
    (its index in the study)."""

    code: np.ndarray
    pack: np.ndarray  # path, object
    offset: np.ndarray
    crc: np.ndarray
    stale: np.ndarray
    dataset: np.ndarray
    legacy: np.ndarray

    @classmethod
    def of(cls, now: Standing) -> Wanted:
        out, index = now.outcomes, now.index
        cells = np.flatnonzero(out.row >= 0)
        rows = out.row[cells]
        records = index.records
        code = records["pack"][rows].astype(np.int64)
        return cls(
            code,
            np.asarray([*index.pack_paths, ""], dtype=object)[code],
            records["offset"][rows],
            records["crc"][rows],
            out.stale[cells],
            out.grid.parts(cells)[0],
            index.pack["legacy"][code] if len(code) else np.zeros(0, dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.code)

    def sources(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Where the records at these positions are, as results.h5 keeps it."""
        return {"pack": self.pack[rows], "offset": self.offset[rows], "crc": self.crc[rows]}


_SHIFT = 40  # a record's key: its pack's code above the offset's bits


def _tables(
    study: Study, now: Standing, previous: Results | None, progress: bool
) -> tuple[dict[str, DatasetTable], dict[str, DatasetTable], tuple[str, ...], int]:
    """Each dataset's current and stale cells as tables, rows from the previous results.h5
    where their record is the same, else read; what could not be read; how many were."""
    wanted = Wanted.of(now)
    names = now.outcomes.grid.datasets
    infos = {e.name: results_info(study, e) for e in study.datasets}
    before = {name: _before(previous, name) for name in names}
    hit = np.full(len(wanted), -1, dtype=np.int64)  # the row in its dataset's last table
    lookup = {path: i for i, path in enumerate(now.index.pack_paths)}
    for i, name in enumerate(names):
        mine = np.flatnonzero(wanted.dataset == i)
        old = before[name]
        if old is not None and len(mine):
            hit[mine] = _match(old, lookup, wanted, mine)
    fresh = gather.read_records(study.layout.root, _jobs(wanted, hit < 0), progress)
    columns, curves = fresh.arrays()
    fresh_table = DatasetTable(infos[names[0]], columns, curves, wanted.sources(fresh.rows))
    at = np.full(len(wanted), -1, dtype=np.int64)
    at[fresh.rows] = np.arange(len(fresh.rows))
    tables: dict[str, DatasetTable] = {}
    aside: dict[str, DatasetTable] = {}
    for i, name in enumerate(names):
        for stale, into in ((False, tables), (True, aside)):
            mine = (wanted.dataset == i) & (wanted.stale == stale)
            kept, read = hit[mine & (hit >= 0)], at[mine & (at >= 0)]
            old = before[name]
            if old is not None and not len(read) and len(kept) == len(old) and not stale:
                table = old  # every row as it was (in order already)
            else:
                parts = [gather.take(fresh_table, read)]
                if old is not None:
                    parts.insert(0, gather.take(old, kept))
                table = gather.concat(infos[name], parts)
            if len(table) or not stale:
                into[name] = dataclasses.replace(table, info=infos[name])
    skipped = tuple(f"{p} at byte {o}: {why}" for p, o, why in fresh.failed)
    return tables, aside, skipped, len(fresh.rows)


def _before(previous: Results | None, name: str) -> DatasetTable | None:
    """A dataset's rows in the previous results.h5 (current and stale together) that say
    where their record is."""
    if previous is None:
        return None
    parts = [t for t in (previous.datasets.get(name), previous.stale.get(name)) if t is not None]
    parts = [t for t in parts if t.records]
    return gather.concat(parts[0].info, parts) if parts else None


def _match(
    old: DatasetTable, lookup: dict[str, int], wanted: Wanted, mine: np.ndarray
) -> np.ndarray:
    """For each wanted record at `mine`, its row in `old` (the same pack, offset and
    checksum), or -1."""
    import pandas as pd

    codes, distinct = pd.factorize(old.records["pack"])
    known = np.array([lookup.get(p, -1) for p in distinct], dtype=np.int64)
    pack = known[codes] if len(codes) else np.zeros(0, dtype=np.int64)
    keys = np.where(pack >= 0, (pack << _SHIFT) | old.records["offset"].astype(np.int64), -1)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    asked = (wanted.code[mine] << _SHIFT) | wanted.offset[mine].astype(np.int64)
    at = np.clip(np.searchsorted(ordered, asked), 0, max(len(ordered) - 1, 0))
    if not len(ordered):
        return np.full(len(mine), -1, dtype=np.int64)
    row = order[at]
    same = (ordered[at] == asked) & (old.records["crc"][row] == wanted.crc[mine])
    return np.where(same, row, -1)


def _jobs(wanted: Wanted, mask: np.ndarray) -> list[gather.Job]:
    """The records to read, grouped by the file they are in, each with its position."""
    by_file: dict[str, list[tuple[int, int]]] = {}
    legacy: dict[str, bool] = {}
    positions = np.flatnonzero(mask)
    for position, path, offset, old in zip(
        positions.tolist(),
        wanted.pack[positions].tolist(),
        wanted.offset[positions].tolist(),
        wanted.legacy[positions].tolist(),
        strict=True,
    ):
        by_file.setdefault(path, []).append((offset, position))
        legacy[path] = old
    return [
        gather.Job(
            path,
            tuple(o for o, _ in sorted(found)),
            legacy[path],
            tuple(p for _, p in sorted(found)),
        )
        for path, found in by_file.items()
    ]


def _software() -> str:
    import importlib.metadata
    import platform

    out = {"python": platform.python_version()}
    for name in ("anysweep", "numpy", "h5py"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = ""
    return json.dumps(out, sort_keys=True)
