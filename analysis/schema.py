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
`dataset` attribute; `add_scores` stores tables in an existing results.h5.
A cell's result file (`results/<dataset>/<arch_id>-s<seed>.h5`) holds one CellResult:
its scalars as root attributes and its curves as 1-D datasets.
Errors are percentages (0-100); flops are multiply-adds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from analysis.files import atomic_file

SCHEMA_VERSION = 2  # of results.h5
READABLE_VERSIONS = (1, 2)  # results.h5 versions read_results accepts
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
            missing = [n for n in SCALAR_FIELDS if n not in attrs]
            if missing:
                raise CorruptResultError(f"{path}: missing attributes {missing}")
            values = {n: _plain(attrs[n]) for n in SCALAR_FIELDS}
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
    cells: Iterable[CellResult],
    attrs: Mapping[str, Any] | None = None,
    scores: Iterable[ScoreTable] = (),
) -> None:
    """Write results.h5 atomically (temporary file, then rename) from columns and cells,
    and the score tables of any declared datasets."""
    path = Path(path)
    missing = [c for c in ARCH_COLUMNS if c not in architectures]
    if missing:
        raise ValueError(f"architectures lack columns {missing}; required: {ARCH_COLUMNS}")
    by_dataset: dict[str, list[CellResult]] = {d.name: [] for d in datasets}
    for cell in cells:
        if cell.dataset not in by_dataset:
            raise ValueError(f"cell {cell.key} names dataset {cell.dataset!r}, not declared")
        by_dataset[cell.dataset].append(cell)
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
            _write_dataset(handle, info, sorted(by_dataset[info.name], key=lambda c: c.key))
        for table in score_tables:
            _write_scores(handle[f"datasets/{table.dataset}"].create_group("scores"), table)


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


def _write_dataset(handle: h5py.File, info: DatasetInfo, cells: list[CellResult]) -> None:
    group = handle.create_group(f"datasets/{info.name}")
    for key, value in asdict(info).items():
        if key == "name":
            continue
        if key == "class_names":
            value = json.dumps(list(value))
        elif key == "subset_classes":
            value = np.asarray(value, dtype=np.int64)
        group.attrs[key] = value
    for name in CELL_COLUMNS:
        column = [getattr(c, name) for c in cells]
        kind = str if name in STRING_FIELDS else None
        data = (
            _column(column)
            if column
            else np.array([], dtype=h5py.string_dtype() if kind else float)
        )
        group.create_dataset(name, data=data)
    curves = group.create_group("curves")
    for name in CURVES:
        curves.create_dataset(name, data=_curve_matrix(cells, name))


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
            columns = {c: _read_array(group[c]) for c in CELL_COLUMNS}
            curves = {c: group["curves"][c][()] for c in CURVES}
            tables[name] = DatasetTable(info=info, columns=columns, curves=curves)
            if "scores" in group:
                scores[name] = _read_scores(group["scores"], name, f"{path}: {name}")
    return Results(attrs=attrs, architectures=archs, datasets=tables, scores=scores)


def _read_array(dataset: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return dataset.asstr()[()].astype(object)
    return dataset[()]


def write_score_file(path: Path, table: ScoreTable) -> None:
    """Write one dataset's score table to its own file atomically (the scores group's
    layout at the root, plus a `dataset` attribute)."""
    with _atomic_h5(Path(path)) as handle:
        handle.attrs["dataset"] = table.dataset
        _write_scores(handle, table)


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
