"""The one results format: a cell's result file and the study's results.h5.

`hpc` writes through this module and `analysis` reads through it; no other module knows
the HDF5 layout. Layout of results.h5 (schema_version 2), as `h5ls -r` shows it:

    /                       attrs: schema_version, created, study, software (JSON)
    /architectures/<col>    one row per architecture (ARCH_COLUMNS; per-stage columns
                            are 2-D, padded with 0 past an architecture's stage count)
    /datasets/<name>        attrs: DATASET_ATTRS (classes, resolution, recipe, kind,
                            parent, subset classes ...)
    /datasets/<name>/<col>  one row per cell (CELL_COLUMNS)
    /datasets/<name>/curves/<curve>  (cells, epochs) per-epoch values, NaN-padded
    /datasets/<name>/scores optional: training-free scores, one row per (architecture,
                            seed) x score (attrs: scores_version, minibatch_size;
                            arrays arch_id (m,), seed (m,), score (k,) names,
                            values (m, k) float64)

A dataset's `kind` says what it is: "dataset" (its own images), "subset" (its `parent`
restricted to the classes `subset_classes`, all of their training images) or "control"
(its `parent` restricted to `num_train` training images with every class kept: the
size-matched control of the parent's subset with that many training images). A
DatasetInfo given no kind takes it from its parent and declaration: no parent, "dataset";
a declaration (`spec`) with `n` training images, "control"; else "subset". Version 1 files
have no `kind` attribute and read the same way.

The scores group is a versioned addition (SCORES_VERSION, on the group): a results.h5
without it reads as before, with no scores. Version 1 held one seed for the whole table
as a `seed` attribute and no `seed` array; it is still read. A score file
(`write_score_file`) holds one dataset's table in the same layout at its root, plus a
`dataset` attribute and, optionally, `inputs` (JSON: what the scores were computed from);
`add_scores` stores tables in an existing results.h5.
A cell's result file (`results/<dataset>/<arch_id>-s<seed>.h5`) holds one CellResult:
its scalars as root attributes and its curves as 1-D datasets.
Errors are percentages (0-100); flops are multiply-adds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from analysis.files import atomic_file

SCHEMA_VERSION = 3  # of results.h5
READABLE_VERSIONS = (1, 2, 3)  # results.h5 versions read_results accepts
CELL_VERSION = 1  # of a cell's result file
SCORES_VERSION = 2  # of the optional /datasets/<name>/scores groups and of score files
READ_SCORES_VERSIONS = (1, 2)  # 1: one seed per table, as an attribute
STATUSES = ("done", "diverged", "failed")
FINAL_STATUSES = ("done", "diverged")
CURVES = (
    "train_loss",
    "train_top1_err",
    "test_top1_err",
    "test_top5_err",
    "epoch_seconds",
    "data_seconds",
)
# Per-architecture columns of /architectures; the per-stage ones are 2-D.
ARCH_COLUMNS = (
    "id",
    "name",
    "num_stages",
    "depths",
    "widths",
    "bottleneck_ratios",
    "group_widths",
    "sampled_widths",
    "sampled_group_widths",
    "stem",
    "stem_width",
    "se_ratio",
    "flops",
    "params",
    "acts",
)
DATASET_ATTRS = (
    "classes",
    "class_names",
    "resolution",
    "num_train",
    "num_test",
    "source",
    "recipe",
    "kind",
    "parent",
    "subset_classes",
    "spec",
)
KINDS = ("dataset", "subset", "control")


class CorruptResultError(ValueError):
    """A result file that cannot be read as a complete cell result."""


@dataclass
class CellResult:
    """One training's outcome: the unit a worker writes and collect merges."""

    dataset: str
    arch_id: int
    seed: int
    status: str
    top1_err: float = float("nan")  # final epoch, test set, percent
    top5_err: float = float("nan")
    best_top1_err: float = float("nan")
    best_epoch: int = -1
    epochs: int = 0  # epochs completed
    diverged_epoch: int = -1
    train_seconds: float = float("nan")  # wall time of the whole cell
    data_seconds: float = float("nan")  # of which waiting for data
    images_per_s: float = float("nan")  # training images per second of training
    peak_mem_bytes: int = 0
    flops: int = 0  # at the dataset's resolution
    params: int = 0
    acts: int = 0
    attempts: int = 1
    error: str = ""  # the traceback of a failed cell
    job_id: str = ""
    host: str = ""
    gpu: str = ""
    versions: str = ""  # JSON: python, torch, ffcv, anysweep ...
    recipe: str = ""  # JSON of the recipe it trained with
    started: str = ""
    finished: str = ""
    spec: str = ""  # JSON of the dataset's spec it trained with
    fingerprint: str = ""  # hex digest of what determines its numbers (hpc.study.fingerprint)
    curves: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        unknown = set(self.curves) - set(CURVES)
        if unknown:
            raise ValueError(f"unknown curves {sorted(unknown)}; valid: {CURVES}")

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.dataset, self.arch_id, self.seed)


SCALAR_FIELDS = tuple(f.name for f in fields(CellResult) if f.name != "curves")
# Fields added after cell files and results.h5 version 1 existed: absent there, read as "".
LATER_FIELDS = ("spec", "fingerprint")
TIME_FIELDS = ("started", "finished")  # ISO 8601 in UTC; results.h5 keeps them as seconds
_FLOAT = {f.name: f.type == "float" for f in fields(CellResult)}
STRING_FIELDS = tuple(f.name for f in fields(CellResult) if f.type == "str" and f.name != "curves")
# Per-cell columns of /datasets/<name>; `dataset` is the group's name.
CELL_COLUMNS = tuple(name for name in SCALAR_FIELDS if name != "dataset")


@dataclass(frozen=True)
class DatasetInfo:
    """What results.h5 records about a dataset besides its cells."""

    name: str
    classes: int
    resolution: int
    num_train: int
    num_test: int
    source: str = ""
    class_names: tuple[str, ...] = ()
    recipe: str = "{}"  # JSON
    parent: str = ""  # a subset's or a control's parent dataset
    subset_classes: tuple[int, ...] = ()  # the parent's class indices a subset keeps
    spec: str = "{}"  # JSON of the dataset's full declaration
    kind: str = ""  # KINDS; "" reads the kind off parent and spec (see _inferred_kind)

    def __post_init__(self) -> None:
        kind = self.kind or self._inferred_kind()
        if kind not in KINDS:
            raise ValueError(f"dataset {self.name!r}: kind {kind!r}; valid: {', '.join(KINDS)}")
        if (kind == "dataset") == bool(self.parent):
            raise ValueError(
                f"dataset {self.name!r}: a {kind} "
                + ("names no parent" if kind == "dataset" else "needs its parent")
            )
        if kind == "control" and self.subset_classes:
            raise ValueError(f"control {self.name!r} keeps every class: no subset_classes")
        object.__setattr__(self, "kind", kind)

    def _inferred_kind(self) -> str:
        """No parent: "dataset"; a parent and a declaration (spec) with a number of training
        images `n`: "control"; any other parent: "subset"."""
        if not self.parent:
            return "dataset"
        try:
            declared = json.loads(self.spec or "{}")
        except ValueError:
            declared = {}
        control = isinstance(declared, dict) and declared.get("n") is not None
        return "control" if control else "subset"


@dataclass
class DatasetTable:
    info: DatasetInfo
    columns: dict[str, np.ndarray]
    curves: dict[str, np.ndarray]
    # Version 3: where each row's record is (RECORD_SOURCE: pack path, offset, checksum),
    # so that a collect reads only the records that changed; empty when not known.
    records: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["arch_id"])


@dataclass(frozen=True, eq=False)
class ScoreTable:
    """One dataset's training-free scores: values[i, j] is score names[j] of architecture
    arch_ids[i] initialised with seed seeds[i], computed on one minibatch of
    `minibatch_size` images drawn with that seed. An architecture may have a row for each
    of several seeds; `seeds` may be given as one int for every row."""

    dataset: str
    arch_ids: np.ndarray  # (m,) int64
    names: tuple[str, ...]  # (k,) distinct
    values: np.ndarray  # (m, k) float64
    minibatch_size: int
    seeds: np.ndarray  # (m,) int64; (arch_id, seed) pairs are distinct

    def __post_init__(self) -> None:
        ids = np.asarray(self.arch_ids, dtype=np.int64).reshape(-1)
        seeds = np.asarray(self.seeds, dtype=np.int64)
        seeds = np.full(len(ids), seeds) if seeds.ndim == 0 else seeds.reshape(-1)
        values = np.asarray(self.values, dtype=np.float64)
        object.__setattr__(self, "arch_ids", ids)
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        shape = (len(ids), len(self.names))
        if values.size == 0:
            values = values.reshape(shape)
        if values.shape != shape or seeds.shape != ids.shape:
            raise ValueError(
                f"scores of {self.dataset!r}: values must be (architectures, scores) = "
                f"{shape} and seeds ({len(ids)},), got {values.shape} and {seeds.shape}"
            )
        object.__setattr__(self, "values", values)
        rows = set(zip(ids.tolist(), seeds.tolist(), strict=True))
        if len(rows) != len(ids) or len(set(self.names)) != len(self.names):
            raise ValueError(
                f"scores of {self.dataset!r}: (arch id, seed) rows and score names must be distinct"
            )
        if self.minibatch_size < 1:
            raise ValueError(f"minibatch_size must be positive, got {self.minibatch_size}")

    @property
    def seed_list(self) -> list[int]:
        """The distinct seeds of the table, in increasing order."""
        return sorted(set(self.seeds.tolist()))

    @property
    def seed(self) -> int:
        """The seed of every row; ValueError when the table holds several."""
        seeds = self.seed_list
        if len(seeds) != 1:
            raise ValueError(f"scores of {self.dataset!r} hold seeds {seeds}, not one")
        return seeds[0]

    def column(self, name: str) -> np.ndarray:
        """The values of score `name`, one per row in arch_ids order."""
        if name not in self.names:
            raise KeyError(f"no score {name!r}; this table holds {list(self.names)}")
        return self.values[:, self.names.index(name)]


@dataclass
class Results:
    attrs: dict[str, Any]
    architectures: dict[str, np.ndarray]
    datasets: dict[str, DatasetTable]
    scores: dict[str, ScoreTable] = field(default_factory=dict)  # datasets that have them
    # Cells trained with what the study no longer says, kept apart from `datasets` (v3).
    stale: dict[str, DatasetTable] = field(default_factory=dict)


@contextlib.contextmanager
def _atomic_h5(path: Path, *, copy: bool = False) -> Iterator[h5py.File]:
    """An HDF5 file to write that replaces `path` only once whole (analysis.files): empty,
    or with `copy` a copy of `path` opened for changes."""
    with atomic_file(path) as tmp:
        if copy:
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+" if copy else "w") as handle:
            yield handle


def write_cell(path: Path, cell: CellResult) -> None:
    """Write one cell's result atomically: a reader sees the whole file or none."""
    with _atomic_h5(Path(path)) as handle:
        handle.attrs["schema_version"] = CELL_VERSION
        for name in SCALAR_FIELDS:
            handle.attrs[name] = getattr(cell, name)
        for name, values in cell.curves.items():
            handle.create_dataset(name, data=np.asarray(values, dtype=np.float64))


def read_cell(path: Path) -> CellResult:
    """Read a cell's result file; a corrupt, partial or foreign file raises CorruptResultError.

    An OSError the system gives (a lock another process holds, permissions, an I/O error:
    it carries an errno) propagates as it is: the file may be whole, and asked again later
    it may read."""
    try:
        with h5py.File(path, "r") as handle:
            attrs = dict(handle.attrs)  # one pass over the attributes, not one lookup each
            version = int(attrs.get("schema_version", -1))
            if version != CELL_VERSION:
                raise CorruptResultError(
                    f"{path}: schema_version {version}, expected {CELL_VERSION}"
                )
            missing = [n for n in SCALAR_FIELDS if n not in attrs and n not in LATER_FIELDS]
            if missing:
                raise CorruptResultError(f"{path}: missing attributes {missing}")
            values = {n: _plain(attrs.get(n, "")) for n in SCALAR_FIELDS}
            curves = {n: handle[n][()] for n in handle if n in CURVES}
    except CorruptResultError:
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise CorruptResultError(f"{path}: not a readable result file ({exc})") from exc
    except (KeyError, ValueError) as exc:
        raise CorruptResultError(f"{path}: not a readable result file ({exc})") from exc
    try:
        return CellResult(**values, curves=curves)
    except (TypeError, ValueError) as exc:
        raise CorruptResultError(f"{path}: {exc}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _column(values: list[Any]) -> np.ndarray:
    if values and isinstance(values[0], str):
        return np.array(values, dtype=h5py.string_dtype())
    return np.asarray(values)


def _curve_matrix(cells: Sequence[CellResult], name: str) -> np.ndarray:
    width = max((len(c.curves.get(name, ())) for c in cells), default=0)
    out = np.full((len(cells), width), np.nan, dtype=np.float32)
    for row, cell in enumerate(cells):
        values = cell.curves.get(name)
        if values is not None and len(values):
            out[row, : len(values)] = values
    return out


def write_results(
    path: Path,
    *,
    architectures: Mapping[str, np.ndarray],
    datasets: Sequence[DatasetInfo],
    cells: Iterable[CellResult] = (),
    attrs: Mapping[str, Any] | None = None,
    scores: Iterable[ScoreTable] = (),
    tables: Mapping[str, DatasetTable] | None = None,
    stale: Mapping[str, DatasetTable] | None = None,
) -> None:
    """Write results.h5 atomically (temporary file, then rename): the architectures' columns,
    each declared dataset's cells (given as `cells`, or as columns in `tables`, rows in
    (arch_id, seed) order), the stale cells kept apart (`stale`), and the score tables of
    any declared datasets."""
    path = Path(path)
    missing = [c for c in ARCH_COLUMNS if c not in architectures]
    if missing:
        raise ValueError(f"architectures lack columns {missing}; required: {ARCH_COLUMNS}")
    by_dataset: dict[str, list[CellResult]] = {d.name: [] for d in datasets}
    for cell in cells:
        if cell.dataset not in by_dataset:
            raise ValueError(f"cell {cell.key} names dataset {cell.dataset!r}, not declared")
        by_dataset[cell.dataset].append(cell)
    given = dict(tables or {})
    undeclared = sorted((set(given) | set(stale or {})) - set(by_dataset))
    if undeclared:
        raise ValueError(f"tables of undeclared datasets {undeclared}")
    score_tables = _check_score_tables(scores, by_dataset)
    with _atomic_h5(Path(path)) as handle:
        handle.attrs["schema_version"] = SCHEMA_VERSION
        for key, value in (attrs or {}).items():
            handle.attrs[key] = value
        group = handle.create_group("architectures")
        for name in ARCH_COLUMNS:
            values = np.asarray(architectures[name])
            if values.dtype.kind in "UO":
                values = values.astype(h5py.string_dtype())
            group.create_dataset(name, data=values)
        for info in datasets:
            table = given.get(info.name) or cells_table(info, by_dataset[info.name])
            _write_dataset(handle, "datasets", info, table)
        for info in datasets:
            if info.name in (stale or {}):
                _write_dataset(handle, "stale", info, (stale or {})[info.name])
        for score_table in score_tables:
            group = handle[f"datasets/{score_table.dataset}"].create_group("scores")
            _write_scores(group, score_table)


def cells_table(info: DatasetInfo, cells: Sequence[CellResult]) -> DatasetTable:
    """Cells as a dataset's columns, in (arch_id, seed) order."""
    ordered = sorted(cells, key=lambda c: c.key)
    columns = {}
    for name in CELL_COLUMNS:
        values = [getattr(c, name) for c in ordered]
        columns[name] = (
            np.array(values, dtype=object)
            if name in STRING_FIELDS
            else np.array(values, dtype=np.float64 if _FLOAT.get(name) else np.int64)
        )
    curves = {name: _curve_matrix(ordered, name) for name in CURVES}
    return DatasetTable(info=info, columns=columns, curves=curves)


def _check_score_tables(tables: Iterable[ScoreTable], declared: Iterable[str]) -> list[ScoreTable]:
    out = list(tables)
    names = set(declared)
    undeclared = sorted({t.dataset for t in out} - names)
    if undeclared or len({t.dataset for t in out}) != len(out):
        raise ValueError(
            f"score tables must name distinct declared datasets; undeclared: {undeclared}, "
            f"declared: {sorted(names)}"
        )
    return out


def _write_dataset(handle: h5py.File, root: str, info: DatasetInfo, table: DatasetTable) -> None:
    group = handle.create_group(f"{root}/{info.name}")
    for key, value in asdict(info).items():
        if key == "name":
            continue
        if key == "class_names":
            value = json.dumps(list(value))
        elif key == "subset_classes":
            value = np.asarray(value, dtype=np.int64)
        group.attrs[key] = value
    rows = len(table.columns["arch_id"])
    for name in CELL_COLUMNS:
        _write_column(group, name, table.columns.get(name), rows)
    curves = group.create_group("curves")
    for name in CURVES:
        matrix = table.curves.get(name, np.empty((rows, 0)))
        curves.create_dataset(name, data=np.asarray(matrix, dtype=np.float32))
    if table.records:
        records = group.create_group("records")
        _write_column(records, "pack", table.records["pack"], rows, text=True)
        records.create_dataset("offset", data=np.asarray(table.records["offset"], dtype=np.int64))
        records.create_dataset("crc", data=np.asarray(table.records["crc"], dtype=np.uint32))


def _write_column(
    group: h5py.Group, name: str, values: np.ndarray | None, rows: int, text: bool = False
) -> None:
    """A column as it is stored: numbers as they are; times (ISO 8601 in UTC, to the second)
    as int64 seconds; other text as int32 codes into the distinct values (strings/<name>)."""
    if not (text or name in STRING_FIELDS):
        data = np.full(rows, np.nan) if values is None else np.asarray(values)
        group.create_dataset(name, data=data if rows else data.astype(np.float64))
        return
    values = np.full(rows, "", dtype=object) if values is None else np.asarray(values, dtype=object)
    if name in TIME_FIELDS and (seconds := _utc_seconds(values)) is not None:
        group.create_dataset(name, data=seconds).attrs["encoding"] = "utc-seconds"
        return
    import pandas as pd  # its factorize hashes 600,000 strings in milliseconds

    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    group.create_dataset(name, data=codes.astype(np.int32)).attrs["encoding"] = "dictionary"
    strings = group.require_group("strings")
    strings.create_dataset(
        name, data=np.asarray(distinct, dtype=object).astype(h5py.string_dtype())
    )


_NO_TIME = np.iinfo(np.int64).min
_UTC = "+00:00"


def _utc_seconds(values: np.ndarray) -> np.ndarray | None:
    """ISO 8601 UTC times to the second (or "") as int64 seconds; None when one is not such
    a time, or would not read back as the same text."""
    given = values != ""
    if not given.any():
        return np.full(len(values), _NO_TIME, dtype=np.int64)
    try:  # one character more than a time has: a longer text shows in the last one
        text = values[given].astype("U26")
    except (ValueError, TypeError):
        return None
    chars = text.view(np.uint32).reshape(-1, 26)
    suffix = np.frombuffer(_UTC.encode("utf-32-le"), dtype=np.uint32)
    if not ((chars[:, 19:25] == suffix).all() and (chars[:, 25] == 0).all()):
        return None
    head = text.astype("U19")
    try:
        stamps = head.astype("datetime64[s]")
    except ValueError:
        return None
    if not (np.datetime_as_string(stamps, unit="s") == head).all():
        return None
    out = np.full(len(values), _NO_TIME, dtype=np.int64)
    out[given] = stamps.astype(np.int64)
    return out


def _read_column(group: h5py.Group, name: str, rows: int) -> np.ndarray:
    """A column as `_write_column` stored it (or as version 1 and 2 did: plain)."""
    if name not in group:  # a field added since the file was written
        return np.full(rows, "", dtype=object)
    dataset = group[name]
    encoding = dataset.attrs.get("encoding", "")
    if encoding == "dictionary":
        distinct = group["strings"][name].asstr()[()].astype(object)
        return distinct[dataset[()]] if len(distinct) else np.full(rows, "", dtype=object)
    if encoding == "utc-seconds":
        seconds = dataset[()]
        out = np.full(len(seconds), "", dtype=object)
        given = seconds != _NO_TIME
        stamps = seconds[given].astype("datetime64[s]")
        out[given] = np.datetime_as_string(stamps, unit="s").astype(object) + _UTC
        return out
    return _read_array(dataset)


def read_root_attr(path: Path, name: str, default: str = "") -> str:
    """One root attribute of results.h5 as text; `default` when the file or it is missing."""
    try:
        with h5py.File(path, "r") as handle:
            return str(_plain(handle.attrs.get(name, default)))
    except OSError:
        return default


def read_results(path: Path) -> Results:
    """Read results.h5 into columns: whole arrays per dataset, no per-cell Python work."""
    with h5py.File(path, "r") as handle:
        version = int(handle.attrs.get("schema_version", -1))
        if version not in READABLE_VERSIONS:
            raise CorruptResultError(
                f"{path}: schema_version {version}; this anysweep reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        attrs = {k: _plain(v) for k, v in handle.attrs.items()}
        archs = {name: _read_array(handle["architectures"][name]) for name in ARCH_COLUMNS}
        tables = {}
        scores: dict[str, ScoreTable] = {}
        for name, group in handle.get("datasets", {}).items():
            tables[name] = _read_table(name, group, version)
            if "scores" in group:
                scores[name] = _read_scores(group["scores"], name, f"{path}: {name}")
        stale = {name: _read_table(name, g, version) for name, g in handle.get("stale", {}).items()}
    return Results(attrs=attrs, architectures=archs, datasets=tables, scores=scores, stale=stale)


def _read_table(name: str, group: h5py.Group, version: int) -> DatasetTable:
    raw = {k: _plain(v) for k, v in group.attrs.items()}
    info = DatasetInfo(
        name=name,
        classes=int(raw["classes"]),
        resolution=int(raw["resolution"]),
        num_train=int(raw["num_train"]),
        num_test=int(raw["num_test"]),
        source=str(raw.get("source", "")),
        class_names=tuple(json.loads(raw.get("class_names", "[]"))),
        recipe=str(raw.get("recipe", "{}")),
        parent=str(raw.get("parent", "")),
        subset_classes=tuple(int(c) for c in np.atleast_1d(raw.get("subset_classes", []))),
        spec=str(raw.get("spec", "{}")),
        kind=str(raw.get("kind", "")) if version >= 2 else "",
    )
    rows = len(group["arch_id"])
    columns = {c: _read_column(group, c, rows) for c in CELL_COLUMNS}
    curves = {c: group["curves"][c][()] for c in CURVES}
    records = {}
    if "records" in group:
        source = group["records"]
        records = {
            "pack": _read_column(source, "pack", rows),
            "offset": source["offset"][()],
            "crc": source["crc"][()],
        }
    return DatasetTable(info=info, columns=columns, curves=curves, records=records)


def _read_array(dataset: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return dataset.asstr()[()].astype(object)
    return dataset[()]


def write_score_file(
    path: Path, table: ScoreTable, inputs: Mapping[str, Any] | None = None
) -> None:
    """Write one dataset's score table to its own file atomically (the scores group's
    layout at the root, plus a `dataset` attribute). `inputs`, when given, is kept as JSON in
    the `inputs` attribute: what the scores were computed from besides the architecture and
    the seed, so that a reader can tell a file made from other inputs."""
    with _atomic_h5(Path(path)) as handle:
        handle.attrs["dataset"] = table.dataset
        if inputs is not None:
            handle.attrs["inputs"] = json.dumps(dict(inputs), sort_keys=True)
        _write_scores(handle, table)


def read_score_inputs(path: Path) -> dict[str, Any]:
    """The `inputs` a score file was written with ({} when none); CorruptResultError when
    the file cannot be read."""
    try:
        with h5py.File(path, "r") as handle:
            text = str(_plain(handle.attrs.get("inputs", "{}")))
        inputs = json.loads(text)
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise CorruptResultError(f"{path}: not a readable score file ({exc})") from exc
    except ValueError as exc:
        raise CorruptResultError(f"{path}: its inputs are not JSON ({exc})") from exc
    if not isinstance(inputs, dict):
        raise CorruptResultError(f"{path}: its inputs are not a JSON object")
    return inputs


def add_scores(path: Path, tables: Iterable[ScoreTable]) -> None:
    """Store score tables in an existing results.h5, each replacing its dataset's table if
    it has one, atomically: a copy of the file is changed, then renamed over it."""
    path = Path(path)
    with h5py.File(path, "r") as handle:
        version = int(handle.attrs.get("schema_version", -1))
        declared = list(handle.get("datasets", {}))
    if version != SCHEMA_VERSION:
        raise CorruptResultError(
            f"{path}: schema_version {version}; this anysweep writes {SCHEMA_VERSION}"
        )
    score_tables = _check_score_tables(tables, declared)
    with _atomic_h5(path, copy=True) as handle:
        for table in score_tables:
            group = handle[f"datasets/{table.dataset}"]
            if "scores" in group:
                del group["scores"]
            _write_scores(group.create_group("scores"), table)


def read_score_file(path: Path) -> ScoreTable:
    """Read a file `write_score_file` wrote; anything else raises CorruptResultError."""
    try:
        with h5py.File(path, "r") as handle:
            dataset = str(_plain(handle.attrs.get("dataset", "")))
            return _read_scores(handle, dataset, str(path))
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise CorruptResultError(f"{path}: not a readable score file ({exc})") from exc


def _write_scores(group: h5py.Group, table: ScoreTable) -> None:
    group.attrs["scores_version"] = SCORES_VERSION
    group.attrs["minibatch_size"] = table.minibatch_size
    group.create_dataset("arch_id", data=table.arch_ids)
    group.create_dataset("seed", data=table.seeds)
    group.create_dataset("score", data=np.array(table.names, dtype=h5py.string_dtype()))
    group.create_dataset("values", data=table.values)


def _read_scores(group: h5py.Group, dataset: str, where: str) -> ScoreTable:
    version = int(group.attrs.get("scores_version", -1))
    if version not in READ_SCORES_VERSIONS:
        raise CorruptResultError(
            f"{where}: scores_version {version}; this anysweep reads {SCORES_VERSION} "
            f"(and {', '.join(map(str, READ_SCORES_VERSIONS[:-1]))})"
        )
    try:
        seeds = np.asarray(group["seed"][()] if version >= 2 else int(group.attrs["seed"]))
        return ScoreTable(
            dataset=dataset,
            arch_ids=group["arch_id"][()],
            names=tuple(group["score"].asstr()[()]),
            values=group["values"][()],
            minibatch_size=int(group.attrs["minibatch_size"]),
            seeds=seeds,
        )
    except (KeyError, ValueError) as exc:
        raise CorruptResultError(f"{where}: not a readable score table ({exc})") from exc


# --- cell records: what a task's pack file holds --------------------------------------------
# A pack is a sequence of records, each a fixed header and a payload:
#   header (RECORD_HEADER, 64 bytes, little-endian): magic "ASr1", record version, kind (0: a
#     cell), flags, payload length, payload crc32, written (POSIX seconds), arch_id, seed,
#     status (index in STATUSES), attempts, train_seconds, config and arch digests (8 bytes
#     each: what the cell trained with, named by hpc.study.fingerprint), the header's crc32;
#   payload: u32 n, then n bytes of zlib'd JSON (the CellResult's scalars and its curves'
#     names), each curve as u32 count and float64 values, then the zlib'd log text.
# The header carries what status and planning read, so an index reads no payload; a record
# whose header or payload fails its crc is never read as a cell.
RECORD_MAGIC = b"ASr1"
RECORD_VERSION = 1
RECORD_HEADER = struct.Struct("<4sBBHIIdiiBxHd8s8sI")
_COUNT = struct.Struct("<I")


@dataclass
class PackScan:
    """The whole records of a pack's bytes from `start` on, as columns (one entry each), and
    what could not be read: `end` is the offset after the last whole record; bytes after it
    that hold no whole record are a write in flight or cut short (`torn`); a record that
    fails its checks but is followed by whole ones is corruption (`corrupt`: offset, why)."""

    end: int
    torn: bool = False
    corrupt: list[tuple[int, str]] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns.get("offset", ()))


HEADER_COLUMNS = (
    "offset",
    "length",
    "crc",
    "written",
    "arch_id",
    "seed",
    "status",
    "attempts",
    "train_seconds",
    "config",
    "arch",
)


def encode_record(
    cell: CellResult, log: str, *, config: bytes, arch: bytes, written: float
) -> bytes:
    """One record (header and payload) holding a cell's result, its log and the digests of
    what it trained with (`config`, `arch`: 8 bytes each)."""
    values = {name: getattr(cell, name) for name in SCALAR_FIELDS}
    values["curves"] = list(cell.curves)
    head = zlib.compress(json.dumps(values).encode(), 1)
    parts = [_COUNT.pack(len(head)), head]
    for name in cell.curves:
        data = np.asarray(cell.curves[name], dtype="<f8")
        parts += [_COUNT.pack(len(data)), data.tobytes()]
    parts.append(zlib.compress(log.encode(), 1))
    payload = b"".join(parts)
    fields_ = (
        RECORD_MAGIC,
        RECORD_VERSION,
        0,
        0,
        len(payload),
        zlib.crc32(payload),
        written,
        cell.arch_id,
        cell.seed,
        STATUSES.index(cell.status),
        min(cell.attempts, 0xFFFF),
        cell.train_seconds,
        config,
        arch,
    )
    header = RECORD_HEADER.pack(*fields_, 0)
    return header[:-4] + _COUNT.pack(zlib.crc32(header[:-4])) + payload


def _header_at(data: bytes | memoryview, pos: int) -> tuple[Any, ...] | str:
    """The header's fields at `pos`, or why there is no whole, sound record there."""
    size = RECORD_HEADER.size
    if len(data) - pos < size:
        return "short"
    fields_ = RECORD_HEADER.unpack_from(data, pos)
    if fields_[0] != RECORD_MAGIC or zlib.crc32(data[pos : pos + size - 4]) != fields_[-1]:
        return "bad header"
    if fields_[1] != RECORD_VERSION or fields_[8] >= len(STATUSES):
        return f"record version {fields_[1]} unknown"
    end = pos + size + fields_[4]
    if end > len(data):
        return "short"
    if zlib.crc32(data[pos + size : end]) != fields_[5]:
        return "bad payload checksum"
    return fields_


def scan_records(data: bytes | memoryview, start: int = 0, base: int = 0) -> PackScan:
    """The records of `data` from offset `start` on (offsets reported plus `base`); a bad
    record is skipped up to the next sound one, and reported when one follows it."""
    columns: dict[str, list[Any]] = {name: [] for name in HEADER_COLUMNS}
    scan = PackScan(end=base + start, columns=columns)
    pos = start
    while pos < len(data):
        found = _header_at(data, pos)
        if isinstance(found, str):
            after = _resync(data, pos + 1)
            if after is None:
                scan.torn = True
                break
            scan.corrupt.append((base + pos, found))
            pos = after
            continue
        _add(columns, base + pos, found)
        pos += RECORD_HEADER.size + found[4]
        scan.end = base + pos
    return scan


def _add(columns: dict[str, list[Any]], offset: int, f: tuple[Any, ...]) -> None:
    values = (offset, f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13])
    for name, value in zip(HEADER_COLUMNS, values, strict=True):
        columns[name].append(value)


def _resync(data: bytes | memoryview, pos: int) -> int | None:
    """The offset of the next sound record at or after `pos`, if any."""
    raw = bytes(data) if isinstance(data, memoryview) else data
    while (pos := raw.find(RECORD_MAGIC, pos)) >= 0:
        if not isinstance(_header_at(raw, pos), str):
            return pos
        pos += 1
    return None


def whole_records_end(data: bytes) -> int:
    """Where a writer appends: after the last sound record (a torn tail is cut off)."""
    return scan_records(data).end


def record_payload(data: bytes | memoryview, offset: int) -> bytes:
    """The payload of the record whose header is at `offset`; CorruptResultError if the
    record there is not whole and sound."""
    found = _header_at(data, offset)
    if isinstance(found, str):
        raise CorruptResultError(f"no sound record at offset {offset}: {found}")
    start = offset + RECORD_HEADER.size
    return bytes(data[start : start + found[4]])


def _payload_parts(payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    (size,) = _COUNT.unpack_from(payload, 0)
    values = json.loads(zlib.decompress(payload[4 : 4 + size]))
    pos, curves = 4 + size, {}
    for name in values.pop("curves"):
        (count,) = _COUNT.unpack_from(payload, pos)
        curves[name] = np.frombuffer(payload, "<f8", count, pos + 4)
        pos += 4 + 8 * count
    return values, curves, pos


def decode_record(payload: bytes) -> tuple[CellResult, str]:
    """A record's cell result and log; CorruptResultError when it is not one."""
    try:
        values, curves, pos = _payload_parts(payload)
        log = zlib.decompress(payload[pos:]).decode()
        values = {name: values.get(name, "") for name in SCALAR_FIELDS}
        return CellResult(**values, curves={k: v.copy() for k, v in curves.items()}), log
    except (ValueError, TypeError, KeyError, zlib.error, struct.error) as exc:
        raise CorruptResultError(f"not a cell record ({exc})") from exc


def decode_record_values(payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A record's scalars and curves, without building a CellResult or reading its log
    (collect reads many)."""
    try:
        values, curves, _ = _payload_parts(payload)
    except (ValueError, KeyError, zlib.error, struct.error) as exc:
        raise CorruptResultError(f"not a cell record ({exc})") from exc
    return values, curves
