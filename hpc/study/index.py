"""The results index, jobs/results-index.npz: what every record of a study's packs says (and
every one-cell result file of a study from before packs), as arrays, so that status, launch,
collect and the stale check read a study of 600,000 cells in a second or two.

Per pack: its path, dataset, inode, size and mtime when read, and the offset after its last
whole record. Per record: pack, offset, length and checksum (which name the record), when
it was written, arch id, seed, status, attempts, train seconds, and codes into small tables
of the distinct config digests (with what each names, for the stale check), architecture
digests and error lines. An update stats every pack and reads only what was appended since
(packs only grow; one replaced or shorter is read again whole). Every verb goes through
`update_index`; the file is a cache: deleting it costs one full read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.files import atomic_file
from analysis.schema import STATUSES, PackScan, decode_record_values, record_payload
from hpc.study import packs
from hpc.study.layout import StudyLayout, result_file
from hpc.study.spec import Study

INDEX_FORMAT = 1
RECORD_DTYPES = {
    "pack": np.int32,
    "dataset": np.int32,
    "offset": np.int64,
    "length": np.int32,
    "crc": np.uint32,
    "written": np.float64,
    "arch_id": np.int32,
    "seed": np.int32,
    "status": np.int8,
    "attempts": np.int16,
    "train_seconds": np.float64,
    "config": np.int32,
    "arch": np.int32,  # -1: not known (a one-cell file whose manifest is gone)
    "error": np.int32,  # -1: none
}
PACK_DTYPES = {
    "inode": np.int64,
    "size": np.int64,
    "mtime": np.int64,
    "end": np.int64,
    "legacy": np.bool_,
}
FAILED = STATUSES.index("failed")
UNKNOWN_DIGEST = bytes(8)  # an architecture not known (a one-cell file whose manifest is gone)
TABLES = ("pack_paths", "datasets", "configs", "config_texts", "archs", "errors", "corrupt")


@dataclass(frozen=True)
class FileState:
    """A pack or one-cell result file as listed: where, whose, and its stat."""

    path: str  # relative to the study folder
    dataset: str
    inode: int
    size: int
    mtime: int  # ns
    legacy: bool


@dataclass
class ResultsIndex:
    pack_paths: list[str] = field(default_factory=list)
    pack: dict[str, np.ndarray] = field(default_factory=dict)  # PACK_DTYPES columns
    records: dict[str, np.ndarray] = field(default_factory=dict)  # RECORD_DTYPES columns
    datasets: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)  # hex digests
    config_texts: list[str] = field(default_factory=list)  # what each digest names
    archs: list[str] = field(default_factory=list)  # hex digests
    errors: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, int, str]] = field(default_factory=list)  # (path, offset, why)

    def __post_init__(self) -> None:
        for name, dtype in PACK_DTYPES.items():
            self.pack.setdefault(name, np.zeros(0, dtype=dtype))
        for name, dtype in RECORD_DTYPES.items():
            self.records.setdefault(name, np.zeros(0, dtype=dtype))

    def __len__(self) -> int:
        return len(self.records["offset"])

    def status_names(self) -> np.ndarray:
        return np.asarray(STATUSES, dtype=object)[self.records["status"]]


def _code(table: list[str], lookup: dict[str, int], value: str) -> int:
    code = lookup.get(value)
    if code is None:
        code = lookup[value] = len(table)
        table.append(value)
    return code


# --- listing and reading ---------------------------------------------------------------------


def list_files(study: Study) -> list[FileState]:
    """The packs and one-cell result files of the study's datasets (temporaries left out)."""
    found = []
    layout = study.layout
    for entry in study.datasets:
        folder = layout.results_dir(entry.name)
        prefix = layout.relative(folder)
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as items:
            for item in items:
                kind = result_file(item.name)
                if kind is None:
                    continue
                try:
                    stat = item.stat()
                except FileNotFoundError:  # moved away since listed
                    continue
                found.append(
                    FileState(
                        f"{prefix}/{item.name}",
                        entry.name,
                        stat.st_ino,
                        stat.st_size,
                        stat.st_mtime_ns,
                        kind == "legacy",
                    )
                )
    return found


@dataclass
class _Builder:
    """The new index being assembled: packs kept, then records read."""

    index: ResultsIndex
    columns: dict[str, list[Any]]
    lookups: dict[str, dict[str, int]]

    @classmethod
    def start(cls, old: ResultsIndex) -> _Builder:
        new = ResultsIndex(
            datasets=list(old.datasets),
            configs=list(old.configs),
            config_texts=list(old.config_texts),
            archs=list(old.archs),
            errors=list(old.errors),
        )
        lookups = {
            name: {v: i for i, v in enumerate(getattr(new, name))}
            for name in ("datasets", "configs", "archs", "errors")
        }
        columns: dict[str, list[Any]] = {name: [] for name in RECORD_DTYPES}
        columns.update({f"pack:{name}": [] for name in PACK_DTYPES})
        return cls(new, columns, lookups)

    def code(self, table: str, value: str) -> int:
        return _code(getattr(self.index, table), self.lookups[table], value)

    def add_pack(self, state: FileState, end: int) -> int:
        self.index.pack_paths.append(state.path)
        columns = self.columns
        columns["pack:inode"].append(state.inode)
        columns["pack:size"].append(state.size)
        columns["pack:mtime"].append(state.mtime)
        columns["pack:end"].append(end)
        columns["pack:legacy"].append(state.legacy)
        return len(self.index.pack_paths) - 1

    def add_records(self, values: dict[str, Any]) -> None:
        for name in RECORD_DTYPES:
            column = values[name]
            self.columns[name].extend(column.tolist() if isinstance(column, np.ndarray) else column)

    def finish(self, kept: dict[str, np.ndarray]) -> ResultsIndex:
        index = self.index
        for name, dtype in PACK_DTYPES.items():
            index.pack[name] = np.asarray(self.columns.get(f"pack:{name}", []), dtype=dtype)
        for name, dtype in RECORD_DTYPES.items():
            fresh = np.asarray(self.columns[name], dtype=dtype)
            index.records[name] = np.concatenate([kept[name].astype(dtype), fresh])
        return index


def _scan_values(
    builder: _Builder, scan: PackScan, data: bytes, start: int, pack: int, dataset: int
) -> dict[str, Any]:
    """A pack scan's records as index columns (`data` holds the pack from byte `start`);
    payloads are decoded only for a config digest not seen before and for failures."""
    cols = scan.columns
    n = len(scan)
    configs = [builder.lookups["configs"].get(c.hex(), -1) for c in cols["config"]]
    errors = [-1] * n
    for i in range(n):
        new_config = configs[i] < 0
        failed = cols["status"][i] == FAILED
        if not (new_config or failed):
            continue
        payload = record_payload(data, cols["offset"][i] - start)
        values, _ = decode_record_values(payload)
        if new_config:
            configs[i] = _config_code(builder, cols["config"][i].hex(), values)
        if failed:
            errors[i] = builder.code("errors", last_line(str(values.get("error", ""))))
    return {
        "pack": [pack] * n,
        "dataset": [dataset] * n,
        "offset": cols["offset"],
        "length": cols["length"],
        "crc": cols["crc"],
        "written": cols["written"],
        "arch_id": cols["arch_id"],
        "seed": cols["seed"],
        "status": cols["status"],
        "attempts": cols["attempts"],
        "train_seconds": cols["train_seconds"],
        "config": configs,
        "arch": [
            -1 if a == UNKNOWN_DIGEST else builder.code("archs", a.hex()) for a in cols["arch"]
        ],
        "error": errors,
    }


def last_line(error: str) -> str:
    """What status shows of a traceback: its last line."""
    lines = error.strip().splitlines()
    return lines[-1] if lines else ""


def _config_code(builder: _Builder, digest: str, values: dict[str, Any]) -> int:
    from hpc.study.fingerprint import recorded_config

    code = builder.code("configs", digest)
    if code == len(builder.index.config_texts):
        spec = json.loads(values.get("spec") or "{}")
        recipe = json.loads(values.get("recipe") or "{}")
        builder.index.config_texts.append(recorded_config(spec, recipe))
    return code


# --- the update ------------------------------------------------------------------------------


def _classify(
    old: ResultsIndex, found: list[FileState]
) -> tuple[list[tuple[int, FileState]], list[tuple[int, FileState]], list[FileState]]:
    """(unchanged, grown, to read whole) of the files found, against the old index."""
    row_of = {path: i for i, path in enumerate(old.pack_paths)}
    inode, size, mtime, legacy = (
        old.pack[k].tolist() for k in ("inode", "size", "mtime", "legacy")
    )
    unchanged, grown, whole = [], [], []
    for state in found:
        i = row_of.get(state.path)
        if i is None or inode[i] != state.inode:
            whole.append(state)
        elif state.size == size[i] and state.mtime == mtime[i]:
            unchanged.append((i, state))
        elif state.size > size[i] and not legacy[i]:
            grown.append((i, state))
        else:
            whole.append(state)
    return unchanged, grown, whole


def update_index(study: Study, *, save: bool = True, progress: bool = False) -> ResultsIndex:
    """The study's index brought up to date with its packs (and one-cell files): stat every
    file, read what is new. Saved unless `save` is False or nothing changed."""
    layout = study.layout
    old = load_index(layout)
    found = list_files(study)
    unchanged, grown, whole = _classify(old, found)
    builder = _Builder.start(old)
    remap = np.full(len(old.pack_paths), -1, dtype=np.int64)
    for i, state in unchanged:
        remap[i] = builder.add_pack(state, int(old.pack["end"][i]))
    grown_rows = {}
    for i, state in grown:
        grown_rows[i] = builder.add_pack(state, int(old.pack["end"][i]))
        remap[i] = grown_rows[i]
    keep = remap[old.records["pack"]] >= 0 if len(old) else np.zeros(0, dtype=bool)
    kept = {name: values[keep] for name, values in old.records.items()}
    kept["pack"] = remap[kept["pack"]].astype(np.int32)
    row_of = {path: i for i, path in enumerate(old.pack_paths)}
    builder.index.corrupt = [c for c in old.corrupt if remap[row_of[c[0]]] >= 0]
    changed = bool(grown or whole) or len(unchanged) != len(old.pack_paths)
    for i, state in grown:
        _read_pack(builder, layout, state, grown_rows[i], int(old.pack["end"][i]))
    legacy = [s for s in whole if s.legacy]
    for state in whole:
        if not state.legacy:
            _read_pack(builder, layout, state, builder.add_pack(state, 0), 0)
    if legacy:
        from hpc.study.legacy import index_legacy

        index_legacy(study, builder, legacy, progress)
    index = builder.finish(kept)
    if save and changed:
        with contextlib.suppress(OSError):  # a read-only study folder still gets its status
            save_index(layout, index)
    return index


def _read_pack(
    builder: _Builder, layout: StudyLayout, state: FileState, row: int, start: int
) -> None:
    """Index the records of a pack from byte `start` on (the rest was indexed before)."""
    try:
        scan, data = packs.read(layout.root / state.path, start)
    except FileNotFoundError:  # gone since listed: seen as gone at the next update
        return
    builder.columns["pack:end"][row] = scan.end
    builder.index.corrupt.extend((state.path, offset, why) for offset, why in scan.corrupt)
    dataset = builder.code("datasets", state.dataset)
    builder.add_records(_scan_values(builder, scan, data, start, row, dataset))


# --- the file --------------------------------------------------------------------------------


def _text_array(values: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(values).encode(), dtype=np.uint8)


def save_index(layout: StudyLayout, index: ResultsIndex) -> None:
    arrays = {f"record:{k}": v for k, v in index.records.items()}
    arrays.update({f"pack:{k}": v for k, v in index.pack.items()})
    for name in TABLES:
        arrays[f"table:{name}"] = _text_array(getattr(index, name))
    arrays["format"] = np.array(INDEX_FORMAT)
    buffer = io.BytesIO()
    savez: Any = np.savez  # numpy's stub reads the arrays' names as its own keywords
    savez(buffer, **arrays)
    with atomic_file(layout.results_index) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_index(layout: StudyLayout) -> ResultsIndex:
    """The saved index; an empty one when there is none or it cannot be read."""
    try:
        with np.load(layout.results_index, allow_pickle=False) as data:
            if int(data["format"]) != INDEX_FORMAT:
                return ResultsIndex()
            tables = {n: json.loads(data[f"table:{n}"].tobytes()) for n in TABLES}
            tables["corrupt"] = [tuple(c) for c in tables["corrupt"]]
            return ResultsIndex(
                pack={k: data[f"pack:{k}"] for k in PACK_DTYPES},
                records={k: data[f"record:{k}"] for k in RECORD_DTYPES},
                **tables,
            )
    except (OSError, ValueError, KeyError):
        return ResultsIndex()


def records_of(index: ResultsIndex, rows: Iterable[int]) -> Iterator[tuple[str, int]]:
    """(pack path, offset) of index rows."""
    for row in rows:
        yield index.pack_paths[index.records["pack"][row]], int(index.records["offset"][row])
