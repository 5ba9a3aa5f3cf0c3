"""study.toml: read and validate a study before anything runs.

Every problem is one ValueError that names the file, the line where it can be found, the key,
and the valid choices. Nothing here touches data, samples architectures or calls Slurm.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hpc.recipe import Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib
    import tomli as tomllib

STUDY_FILE = "study.toml"
SECTIONS = ("study", "design", "recipe", "cluster", "datasets")
DEVICES = ("auto", "cpu", "cuda")
# Keys of a [datasets.NAME] table that belong to the study, not to the dataset's files.
DATASET_STUDY_KEYS = ("recipe", "cluster", "stem")


class StudyError(ValueError):
    """A study.toml that cannot run: the message says where, what, and what is valid."""


@dataclass(frozen=True)
class StudySettings:
    """[study]: what is trained, how often, and where the study's data lives."""

    name: str = ""  # empty: the study folder's name
    reference: str = ""  # the dataset every other is compared with; empty: the first declared
    architectures: int = 24  # architecture ids 0..architectures-1
    seeds: int = 1  # training seeds 0..seeds-1 per architecture and dataset
    max_attempts: int = 3  # a failed cell is retried until it has failed this many times
    device: str = "auto"  # auto: CUDA when a GPU is visible, else CPU
    data_dir: str = "data"  # prepared datasets, relative to the study folder or absolute

    def __post_init__(self) -> None:
        for key in ("architectures", "seeds", "max_attempts"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class Design:
    """[design]: the design space, its overrides, and the complexity constraints."""

    space: str = "anynetx_a"
    seed: int = 0  # sampling seed: the same seed gives the same architectures, prefix-stable
    resolution: int = 224  # the resolution the complexity constraints are counted at
    num_classes: int = 1000  # the classifier size the constraints are counted with
    flops: tuple[float, float] | None = None  # multiply-adds, inclusive (lo, hi)
    params: tuple[float, float] | None = None
    acts: tuple[float, float] | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # get_space(space, **overrides)

    def space_options(self) -> dict[str, Any]:
        return dict(self.overrides)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "space": self.space, "seed": self.seed, "resolution": self.resolution,
            "num_classes": self.num_classes,
        }  # fmt: skip
        for key in ("flops", "params", "acts"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value)
        for key, value in self.overrides:
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class ClusterSpec:
    """[cluster] (and [datasets.NAME.cluster]): what one array task asks of the scheduler."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    gpus: int = 1  # per task
    cpus: int = 8  # per task
    mem_gb: int = 32  # per task
    time_min: int = 240  # a task's time limit; chunks are sized to fit in margin * time_min
    setup: tuple[str, ...] = ()  # shell lines run before the worker (module load, venv, ...)
    array_parallelism: int = 256  # at most this many tasks of one array run at once
    max_array_size: int = 1001  # Slurm's MaxArraySize when `scontrol show config` is not asked
    margin: float = 0.75  # the share of the time limit a chunk's estimate may fill
    throughput: float = 2e12  # multiply-adds per second per GPU, until cells are measured

    def __post_init__(self) -> None:
        problems = [
            f"{key} must be >= {low}, got {getattr(self, key)}"
            for key, low in (("gpus", 0), ("cpus", 1), ("mem_gb", 1), ("time_min", 1),
                             ("array_parallelism", 1), ("max_array_size", 1))
            if getattr(self, key) < low
        ]  # fmt: skip
        if not 0 < self.margin <= 1:
            problems.append(f"margin must be in (0, 1], got {self.margin}")
        if not self.throughput > 0:
            problems.append(f"throughput must be > 0, got {self.throughput}")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["setup"] = list(self.setup)
        return out


@dataclass(frozen=True)
class DatasetEntry:
    """One [datasets.NAME] table: the dataset (loaders' DatasetSpec), its recipe and resources."""

    name: str
    spec: Any  # loaders.registry.DatasetSpec
    recipe: Recipe
    cluster: ClusterSpec
    stem: str = ""  # empty: the design space's stem
    options: tuple[tuple[str, Any], ...] = ()  # as declared, for get_dataset

    @property
    def resolution(self) -> int:
        return self.recipe.resolution or self.spec.resolution


@dataclass(frozen=True)
class Study:
    """A validated study.toml and the folder it lives in."""

    root: Path
    settings: StudySettings
    design: Design
    recipe: Recipe
    cluster: ClusterSpec
    datasets: tuple[DatasetEntry, ...]
    source: str = field(default="", repr=False)  # the file's text, kept for `launch` records

    @property
    def name(self) -> str:
        return self.settings.name or self.root.name

    @property
    def reference(self) -> str:
        return self.settings.reference or self.datasets[0].name

    @property
    def data_dir(self) -> Path:
        return self.root / self.settings.data_dir

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.settings.seeds))

    def dataset(self, name: str) -> DatasetEntry:
        for entry in self.datasets:
            if entry.name == name:
                return entry
        raise ValueError(
            f"dataset {name!r} is not in {self.root / STUDY_FILE}; "
            f"its datasets: {', '.join(d.name for d in self.datasets)}"
        )


def load_study(root: Path | str) -> Study:
    """Read and validate ROOT/study.toml (or the file itself when ROOT is a .toml path)."""
    path = Path(root)
    if path.suffix == ".toml":
        path, root = path, path.parent
    else:
        path = path / STUDY_FILE
    root = Path(root).resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; `anysweep init {root} --preset demo` writes one"
        )
    text = path.read_text()
    return parse_study(text, root=root, filename=str(path))


def parse_study(text: str, root: Path | str, filename: str = STUDY_FILE) -> Study:
    """Validate a study.toml's text; see `load_study`."""
    where = _Where(filename, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{filename}: not valid TOML: {exc}") from None
    _check_keys(data, SECTIONS, (), where, "the top level")
    settings = _fill(StudySettings, _table(data, "study", where), ("study",), where)
    if settings.device not in DEVICES:
        raise where.error(("study", "device"), f"device {settings.device!r} is not one of {DEVICES}")
    design = _design(_table(data, "design", where), where)
    recipe = _recipe(_table(data, "recipe", where), Recipe(), ("recipe",), where)
    cluster = _cluster(_table(data, "cluster", where), ClusterSpec(), ("cluster",), where)
    datasets = _datasets(_table(data, "datasets", where), recipe, cluster, design, where)
    names = [d.name for d in datasets]
    if settings.reference and settings.reference not in names:
        raise where.error(
            ("study", "reference"),
            f"reference {settings.reference!r} is not a declared dataset; declared: {', '.join(names)}",
        )
    return Study(Path(root).resolve(), settings, design, recipe, cluster, datasets, text)


# --- sections -----------------------------------------------------------------------------


def _design(table: dict[str, Any], where: _Where) -> Design:
    from anynet.spaces import SPACE_NAMES, get_space, override_keys

    own = [f.name for f in fields(Design) if f.name != "overrides"]
    space = table.get("space", Design.space)
    if not isinstance(space, str) or space.lower() not in SPACE_NAMES:
        raise where.error(
            ("design", "space"), f"space {space!r} is not a design space; valid: {list(SPACE_NAMES)}"
        )
    _check_keys(table, (*own, *override_keys(space)), ("design",), where, "[design]")
    values = {k: v for k, v in table.items() if k in own}
    overrides = {k: v for k, v in table.items() if k not in own}
    for key in ("flops", "params", "acts"):
        if key in values:
            values[key] = _range(values[key], ("design", key), where)
    design = _fill(Design, values, ("design",), where)
    try:
        space_obj = get_space(space, **overrides)
    except ValueError as exc:
        raise where.error(("design",), str(exc)) from None
    design = dataclasses.replace(
        design, space=space.lower(), overrides=tuple(sorted((k, _frozen(v)) for k, v in overrides.items()))
    )
    for key in ("resolution", "num_classes"):
        if getattr(design, key) < 1:
            raise where.error(("design", key), f"{key} must be >= 1, got {getattr(design, key)}")
    _check_reachable(design, space_obj, where)
    return design


def _range(value: Any, path: tuple[str, ...], where: _Where) -> tuple[float, float]:
    ok = (
        isinstance(value, list) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )  # fmt: skip
    if not ok:
        raise where.error(path, f"{path[-1]} must be a [lo, hi] pair of numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not 0 <= lo <= hi:
        raise where.error(path, f"{path[-1]} = [{lo:g}, {hi:g}] is impossible: need 0 <= lo <= hi")
    return lo, hi


def _check_reachable(design: Design, space: Any, where: _Where) -> None:
    """A complexity range outside everything the space can build is an error now, not after
    minutes of rejection sampling."""
    from anynet.complexity import complexity_batch
    from anynet.spaces import AnyNetSpace

    if not isinstance(space, AnyNetSpace):
        return  # RegNet's extremes are not at the corners of its ranges; the sampler reports
    # Complexity grows with depth, width and group width and shrinks with the bottleneck
    # ratio, so the corners of the space bound it.
    s = space.stages
    corners = [
        (space.min_depth, space.min_width, max(space.bottleneck_ratios), min(space.group_widths)),
        (space.max_depth, space.max_width, min(space.bottleneck_ratios), max(space.group_widths)),
    ]
    bounds = []
    for depth, width, ratio, group in corners:
        group = min(group, max(1, round(width / ratio)))
        cx = complexity_batch(
            [[depth] * s], [[width] * s], [[ratio] * s], [[group] * s],
            stem=space.stem, stem_width=space.stem_width, se_ratio=space.se_ratio,
            resolution=design.resolution, num_classes=design.num_classes,
        )
        bounds.append([int(v[0]) for v in cx])
    for i, key in enumerate(("flops", "params", "acts")):
        wanted = getattr(design, key)
        if wanted is None:
            continue
        low, high = bounds[0][i], bounds[1][i]
        # 10 % slack: the compatibility rule moves widths a little past the corners.
        if wanted[1] < 0.9 * low or wanted[0] > 1.1 * high:
            raise where.error(
                ("design", key),
                f"{key} = [{wanted[0]:,.0f}, {wanted[1]:,.0f}] is impossible: design space "
                f"{design.space!r} (as overridden) spans about {low:,} to {high:,} {key} at "
                f"resolution {design.resolution}; widen the range or the space",
            )


def _recipe(table: dict[str, Any], base: Recipe, path: tuple[str, ...], where: _Where) -> Recipe:
    try:
        return base.merged(table, where=f"[{'.'.join(path)}]")
    except ValueError as exc:
        raise where.error(path + _first_key(str(exc), table), str(exc)) from None


def _cluster(
    table: dict[str, Any], base: ClusterSpec, path: tuple[str, ...], where: _Where
) -> ClusterSpec:
    return _fill(ClusterSpec, {**base.to_dict(), **table}, path, where, check_only=table)


def _datasets(
    table: dict[str, Any], recipe: Recipe, cluster: ClusterSpec, design: Design, where: _Where
) -> tuple[DatasetEntry, ...]:
    from anynet.arch import STEMS
    from loaders.registry import dataset_names, spec_keys

    if not table:
        raise where.error(
            ("datasets",),
            "no dataset declared; add a [datasets.NAME] table, e.g. [datasets.fashion_mnist]; "
            f"registered datasets: {', '.join(dataset_names())}",
        )
    valid = (*spec_keys()[1:], *DATASET_STUDY_KEYS)  # `name` is the table's name
    for name, raw in table.items():
        if not isinstance(raw, dict):
            raise where.error(("datasets", name), f"datasets.{name} must be a table ([datasets.{name}])")
        _check_keys(raw, valid, ("datasets", name), where, f"[datasets.{name}]")
    entries = []
    for name, raw in table.items():
        path = ("datasets", name)
        parent = _declared_parent(name, raw, table)
        # A subset of a declared dataset shares its files, options, recipe and resources
        # unless it says otherwise.
        base = table[parent] if parent else {}
        options = {k: v for k, v in base.items() if k not in (*DATASET_STUDY_KEYS, *SUBSET_KEYS)}
        options.update({k: v for k, v in raw.items() if k not in DATASET_STUDY_KEYS})
        if parent and "parent" not in options:
            options.update(_subset_from_name(name, parent))
        spec = _dataset_spec(name, options, path, where)
        stem = raw.get("stem", base.get("stem", ""))
        if stem not in ("", *STEMS):
            raise where.error(path + ("stem",), f"stem {stem!r} is not one of {list(STEMS)} (or \"\")")
        own_recipe, own_cluster = recipe, cluster
        for source, source_path in ((base, ("datasets", parent or "")), (raw, path)):
            own_recipe = _recipe(_sub(source, "recipe", source_path, where), own_recipe,
                                 source_path + ("recipe",), where)
            own_cluster = _cluster(_sub(source, "cluster", source_path, where), own_cluster,
                                   source_path + ("cluster",), where)
        entries.append(DatasetEntry(
            name=name, spec=spec, recipe=own_recipe, cluster=own_cluster, stem=stem,
            options=tuple(sorted((k, _frozen(v)) for k, v in options.items())),
        ))  # fmt: skip
    return tuple(entries)


SUBSET_KEYS = ("parent", "k", "subset_seed", "classes")


def _declared_parent(name: str, raw: dict[str, Any], table: dict[str, Any]) -> str | None:
    """The declared dataset this one is a subset of, by its `parent` key or its name."""
    from loaders.registry import REGISTRY, SUBSET_RE

    parent = raw.get("parent")
    if isinstance(parent, str):
        return parent if parent in table and parent != name else None
    match = SUBSET_RE.fullmatch(name)
    if match and match["parent"] in table and name not in REGISTRY and match["parent"] != name:
        return match["parent"]
    return None


def _subset_from_name(name: str, parent: str) -> dict[str, Any]:
    from loaders.registry import SUBSET_RE

    match = SUBSET_RE.fullmatch(name)
    if match is None or match["parent"] != parent:
        return {"parent": parent}
    return {"parent": parent, "k": int(match["k"]), "subset_seed": int(match["seed"] or 0)}


def _dataset_spec(name: str, options: dict[str, Any], path: tuple[str, ...], where: _Where) -> Any:
    from loaders.registry import get_dataset

    try:
        return get_dataset(name, **options)
    except (ValueError, TypeError) as exc:
        raise where.error(path + _first_key(str(exc), options), str(exc)) from None


def _sub(raw: dict[str, Any], key: str, path: tuple[str, ...], where: _Where) -> dict[str, Any]:
    value = raw.get(key, {}) if raw else {}
    if not isinstance(value, dict):
        raise where.error(path + (key,), f"{key} must be a table of overrides, got {value!r}")
    return value


# --- generic checks -----------------------------------------------------------------------


def _table(data: dict[str, Any], key: str, where: _Where) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise where.error((key,), f"{key} must be a table ([{key}]), got {type(value).__name__}")
    return value


def _check_keys(
    table: Mapping[str, Any], valid: tuple[str, ...] | list[str], path: tuple[str, ...],
    where: _Where, what: str,
) -> None:
    unknown = [k for k in table if k not in valid]
    if unknown:
        raise where.error(
            path + (unknown[0],),
            f"unknown key {unknown[0]!r} in {what}; valid keys: {', '.join(valid)}",
        )


def _fill(
    cls: type, values: dict[str, Any], path: tuple[str, ...], where: _Where,
    check_only: Mapping[str, Any] | None = None,
) -> Any:
    """cls(**values) with the types of cls's defaults enforced; errors name the key."""
    valid = {f.name: f for f in fields(cls) if f.name != "overrides"}
    _check_keys(values, tuple(valid), path, where, f"[{'.'.join(path)}]")
    defaults = cls()
    clean = {}
    for key, value in values.items():
        clean[key] = _typed(key, value, getattr(defaults, key), path, where)
    try:
        return cls(**clean)
    except ValueError as exc:
        raise where.error(path + _first_key(str(exc), check_only or values), str(exc)) from None


def _typed(key: str, value: Any, default: Any, path: tuple[str, ...], where: _Where) -> Any:
    if key in ("flops", "params", "acts"):
        return value
    expected = type(default)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise where.error(path + (key,), f"{key} must be a list of strings, got {value!r}")
        return tuple(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)  # 1e3 in TOML is a float; a whole number is meant
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise where.error(
            path + (key,),
            f"{key} must be {_kind(expected)}, got {type(value).__name__} {value!r}",
        )
    if expected is int and value < 0:
        raise where.error(path + (key,), f"{key} must be >= 0, got {value}")
    return value


def _kind(expected: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        expected, expected.__name__
    )


def _first_key(message: str, table: Mapping[str, Any]) -> tuple[str, ...]:
    """The first key of `table` a message names, to point the error at its line."""
    for key in table:
        if re.search(rf"\b{re.escape(key)}\b", message):
            return (key,)
    return ()


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class _Where:
    """Line numbers of tables and keys in a TOML text, found by a light scan (tomllib keeps
    none), so that errors point at the line to fix."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")
    _INLINE = re.compile(r"([A-Za-z0-9_\-]+)\s*=")

    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.lines: dict[tuple[str, ...], int] = {}
        prefix: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                prefix = _split_key(header.group(1))
                self.lines.setdefault(prefix, number)
                continue
            key = self._KEY.match(line)
            if key and not line.lstrip().startswith("#"):
                path = prefix + _split_key(key.group(1))
                self.lines.setdefault(path, number)
                rest = line[key.end():]
                if rest.strip().startswith("{"):
                    for inner in self._INLINE.findall(rest):
                        self.lines.setdefault(path + (inner,), number)

    def line(self, path: tuple[str, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, path: tuple[str, ...], message: str) -> StudyError:
        line = self.line(path)
        place = f"{self.filename}:{line}" if line else self.filename
        return StudyError(f"{place}: {message}")


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))
