"""study.toml: read and validate a study before anything runs.

Every problem is one ValueError that names the file, the line where it can be found, the key,
and the valid choices. Nothing here touches data, samples architectures or calls Slurm.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hpc.study.layout import DATA_DIR, STUDY_FILE, StudyLayout
from hpc.study.recipe import Recipe
from hpc.study.tomlcheck import StudyError, Where, check_keys, fill, first_key, frozen, table_at

SECTIONS = ("study", "design", "recipe", "cluster", "scores", "datasets")
DEVICES = ("auto", "cpu", "cuda")  # [study] device; a manifest may name cuda:N too
# Keys of a [datasets.NAME] table that belong to the study, not to the dataset's files.
DATASET_STUDY_KEYS = ("recipe", "cluster", "stem")


@dataclass(frozen=True)
class StudySettings:
    """[study]: what is trained, how often, and where the study's data lives."""

    MINIMUMS: ClassVar[dict[str, int]] = {"architectures": 1, "seeds": 1, "max_attempts": 1}

    name: str = ""  # empty: the study folder's name
    reference: str = ""  # the dataset every other is compared with; empty: the first declared
    architectures: int = 24  # architecture ids 0..architectures-1
    seeds: int = 1  # training seeds 0..seeds-1 per architecture and dataset
    max_attempts: int = 3  # a failed cell is retried until it has failed this many times
    device: str = "auto"  # auto: CUDA when a GPU is visible, else CPU
    data_dir: str = DATA_DIR  # prepared datasets, relative to the study folder or absolute

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
            "space": self.space,
            "seed": self.seed,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
        }
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

    MINIMUMS: ClassVar[dict[str, int]] = {
        key: 1 for key in ("cpus", "mem_gb", "time_min", "array_parallelism", "max_array_size")
    }

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
    gpu: str = ""  # the device kind of the throughput table ("": its default for GPU or CPU)
    cohort: str | int = "auto"  # cells trained in lockstep from one loader; auto: the table's K
    cuda_graphs: str | bool = "auto"  # speed only: members' steps as CUDA graphs on streams
    throughput: float = 0.0  # > 0: price steps by multiply-adds at this rate, not the table

    def __post_init__(self) -> None:
        problems = [
            f"{key} must be >= {low}, got {getattr(self, key)}"
            for key, low in (
                ("gpus", 0),
                ("cpus", 1),
                ("mem_gb", 1),
                ("time_min", 1),
                ("array_parallelism", 1),
                ("max_array_size", 1),
            )
            if getattr(self, key) < low
        ]
        if not 0 < self.margin <= 1:
            problems.append(f"margin must be in (0, 1], got {self.margin}")
        if self.throughput < 0:
            problems.append(
                f"throughput must be >= 0 (0: the throughput table), got {self.throughput}"
            )
        problems += _cohort_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["setup"] = list(self.setup)
        return out


def _cohort_problems(cluster: ClusterSpec) -> list[str]:
    from hpc.study.throughput import device_kinds

    problems = []
    if cluster.cohort != "auto" and not (
        isinstance(cluster.cohort, int)
        and not isinstance(cluster.cohort, bool)
        and cluster.cohort >= 1
    ):
        problems.append(f'cohort must be "auto" or an integer >= 1, got {cluster.cohort!r}')
    if not (cluster.cuda_graphs == "auto" or isinstance(cluster.cuda_graphs, bool)):
        problems.append(f'cuda_graphs must be "auto", true or false, got {cluster.cuda_graphs!r}')
    if cluster.gpu and cluster.gpu not in device_kinds():
        problems.append(
            f"gpu {cluster.gpu!r} is not a device kind of the throughput table "
            f"(hpc/study/throughput.toml); kinds: {', '.join(device_kinds())}"
        )
    return problems


@dataclass(frozen=True)
class ScoreSettings:
    """[scores]: the training-free scores of every (architecture, dataset), before training."""

    enabled: bool = True  # `anysweep run` (and the demo) computes them before training
    minibatch_size: int = 64  # images of the one minibatch each score looks at
    architectures_per_file: int = 100  # a score file (and a task) holds this many ids

    def __post_init__(self) -> None:
        # NASWOT's kernel and jacob_cov's correlations compare images: one is not enough.
        for key, low in (("minibatch_size", 2), ("architectures_per_file", 1)):
            if getattr(self, key) < low:
                raise ValueError(f"{key} must be >= {low}, got {getattr(self, key)}")


@dataclass(frozen=True)
class DatasetEntry:
    """One [datasets.NAME] table: the dataset (loaders' DatasetSpec), its recipe and resources."""

    name: str
    spec: Any  # loaders.registry.DatasetSpec
    recipe: Recipe
    cluster: ClusterSpec
    stem: str = ""  # empty: the design space's stem

    @property
    def resolution(self) -> int:
        return self.recipe.resolution or self.spec.resolution

    @property
    def prepared_spec(self) -> Any:
        """The dataset whose prepared files this one reads: its parent's for a subset or a
        size control."""
        return prepared_spec(self.spec)


def prepared_spec(spec: Any) -> Any:
    """The DatasetSpec whose prepared files `spec` reads: a derived dataset (a subset, a size
    control) reads its parent's."""
    return spec.parent_spec() if spec.is_derived else spec


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
    scores: ScoreSettings = ScoreSettings()

    @property
    def name(self) -> str:
        return self.settings.name or self.root.name

    @property
    def reference(self) -> str:
        return self.settings.reference or self.datasets[0].name

    @property
    def layout(self) -> StudyLayout:
        """Where the study's files are."""
        return StudyLayout.at(self.root, self.settings.data_dir)

    @property
    def data_dir(self) -> Path:
        return self.layout.data_dir

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.settings.seeds))

    def dataset(self, name: str) -> DatasetEntry:
        for entry in self.datasets:
            if entry.name == name:
                return entry
        raise ValueError(
            f"dataset {name!r} is not in {self.layout.study_file}; "
            f"its datasets: {', '.join(d.name for d in self.datasets)}"
        )


def load_study(root: Path | str) -> Study:
    """Read and validate ROOT/study.toml (or the file itself when ROOT is a .toml path)."""
    path = Path(root)
    if path.suffix == ".toml":
        path, root = path, path.parent
    else:
        path = StudyLayout.at(path).study_file
    root = Path(root).resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; `anysweep init {root} --preset demo` writes one"
        )
    text = path.read_text()
    return parse_study(text, root=root, filename=str(path))


def parse_study(text: str, root: Path | str, filename: str = STUDY_FILE) -> Study:
    """Validate a study.toml's text; see `load_study`."""
    where = Where(filename, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{filename}: not valid TOML: {exc}") from None
    check_keys(data, SECTIONS, (), where, "the top level")
    settings = fill(StudySettings, table_at(data, "study", where), ("study",), where)
    if settings.device not in DEVICES:
        raise where.error(
            ("study", "device"), f"device {settings.device!r} is not one of {DEVICES}"
        )
    design = _design(table_at(data, "design", where), where)
    recipe = _recipe(table_at(data, "recipe", where), Recipe(), ("recipe",), where)
    cluster = _cluster(table_at(data, "cluster", where), ClusterSpec(), ("cluster",), where)
    scores = fill(ScoreSettings, table_at(data, "scores", where), ("scores",), where)
    datasets = _datasets(table_at(data, "datasets", where), recipe, cluster, where)
    names = [d.name for d in datasets]
    if settings.reference and settings.reference not in names:
        raise where.error(
            ("study", "reference"),
            f"reference {settings.reference!r} is not a declared dataset; declared: {', '.join(names)}",
        )
    return Study(Path(root).resolve(), settings, design, recipe, cluster, datasets, text, scores)


# --- sections -----------------------------------------------------------------------------


def _design(table: dict[str, Any], where: Where) -> Design:
    from anynet.spaces import SPACE_NAMES, get_space, override_keys

    own = [f.name for f in fields(Design) if f.name != "overrides"]
    space = table.get("space", Design.space)
    if not isinstance(space, str) or space.lower() not in SPACE_NAMES:
        raise where.error(
            ("design", "space"),
            f"space {space!r} is not a design space; valid: {list(SPACE_NAMES)}",
        )
    check_keys(table, (*own, *override_keys(space)), ("design",), where, "[design]")
    values = {k: v for k, v in table.items() if k in own}
    overrides = {k: v for k, v in table.items() if k not in own}
    for key in ("flops", "params", "acts"):
        if key in values:
            values[key] = _range(values[key], ("design", key), where)
    design = fill(Design, values, ("design",), where)
    try:
        space_obj = get_space(space, **overrides)
    except ValueError as exc:
        raise where.error(("design",), str(exc)) from None
    design = dataclasses.replace(
        design,
        space=space.lower(),
        overrides=tuple(sorted((k, frozen(v)) for k, v in overrides.items())),
    )
    for key in ("resolution", "num_classes"):
        if getattr(design, key) < 1:
            raise where.error(("design", key), f"{key} must be >= 1, got {getattr(design, key)}")
    _check_reachable(design, space_obj, where)
    return design


def _range(value: Any, path: tuple[str, ...], where: Where) -> tuple[float, float]:
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if not ok:
        raise where.error(path, f"{path[-1]} must be a [lo, hi] pair of numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not 0 <= lo <= hi:
        raise where.error(path, f"{path[-1]} = [{lo:g}, {hi:g}] is impossible: need 0 <= lo <= hi")
    return lo, hi


def _check_reachable(design: Design, space: Any, where: Where) -> None:
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
            np.full((1, s), depth),
            np.full((1, s), width),
            np.full((1, s), ratio),
            np.full((1, s), group),
            stem=space.stem,
            stem_width=space.stem_width,
            se_ratio=space.se_ratio,
            resolution=design.resolution,
            num_classes=design.num_classes,
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


def _recipe(table: dict[str, Any], base: Recipe, path: tuple[str, ...], where: Where) -> Recipe:
    try:
        return base.merged(table, where=f"[{'.'.join(path)}]")
    except ValueError as exc:
        raise where.error(path + first_key(str(exc), table), str(exc)) from None


def _cluster(
    table: dict[str, Any], base: ClusterSpec, path: tuple[str, ...], where: Where
) -> ClusterSpec:
    return fill(ClusterSpec, {**base.to_dict(), **table}, path, where, check_only=table)


def _datasets(
    table: dict[str, Any], recipe: Recipe, cluster: ClusterSpec, where: Where
) -> tuple[DatasetEntry, ...]:
    from anynet.arch import STEMS
    from loaders.registry import SUBSET_KEYS, dataset_names, spec_keys

    if not table:
        raise where.error(
            ("datasets",),
            "no dataset declared; add a [datasets.NAME] table, e.g. [datasets.fashion_mnist]; "
            f"registered datasets: {', '.join(dataset_names())}",
        )
    valid = (*spec_keys()[1:], *DATASET_STUDY_KEYS)  # `name` is the table's name
    for name, raw in table.items():
        if not isinstance(raw, dict):
            raise where.error(
                ("datasets", name), f"datasets.{name} must be a table ([datasets.{name}])"
            )
        check_keys(raw, valid, ("datasets", name), where, f"[datasets.{name}]")
    entries = []
    for name, raw in table.items():
        path = ("datasets", name)
        parent = _declared_parent(name, raw, table)
        # A subset of a declared dataset shares its files, options, recipe and resources
        # unless it says otherwise.
        base = table[parent] if parent else {}
        options = {k: v for k, v in _own_options(base).items() if k not in SUBSET_KEYS}
        options.update(_own_options(raw))
        if parent and "parent" not in options:
            options.update(_subset_from_name(name, parent))
        spec = _dataset_spec(name, options, path, where)
        if parent:
            declared = _dataset_spec(
                parent, _own_options(table[parent]), ("datasets", parent), where
            )
            _check_shared_files(spec, declared, path, where)
        stem = raw.get("stem", base.get("stem", ""))
        if stem not in ("", *STEMS):
            raise where.error(
                path + ("stem",), f'stem {stem!r} is not one of {list(STEMS)} (or "")'
            )
        own_recipe, own_cluster = recipe, cluster
        for source, source_path in ((base, ("datasets", parent or "")), (raw, path)):
            own_recipe = _recipe(
                _sub(source, "recipe", source_path, where),
                own_recipe,
                source_path + ("recipe",),
                where,
            )
            own_cluster = _cluster(
                _sub(source, "cluster", source_path, where),
                own_cluster,
                source_path + ("cluster",),
                where,
            )
        entries.append(DatasetEntry(name, spec, own_recipe, own_cluster, stem))
    return tuple(entries)


def _own_options(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in DATASET_STUDY_KEYS}


def _check_shared_files(subset: Any, parent: Any, path: tuple[str, ...], where: Where) -> None:
    """A subset reads its parent's prepared files, so it cannot prepare them otherwise."""
    mine, theirs = prepared_spec(subset).to_dict(), parent.to_dict()
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        raise where.error(
            path + (differ[0],),
            f"{subset.name} reads the prepared files of {parent.name}, so it takes its "
            f"{', '.join(differ)} from [datasets.{parent.name}]; set them there",
        )


def _declared_parent(name: str, raw: dict[str, Any], table: dict[str, Any]) -> str | None:
    """The declared dataset this one is a subset of, by its `parent` key or its name."""
    from loaders.registry import REGISTRY, parent_of

    parent = raw.get("parent")
    if isinstance(parent, str):
        return parent if parent in table and parent != name else None
    derived = parent_of(name)
    if derived and derived in table and name not in REGISTRY and derived != name:
        return derived
    return None


def _subset_from_name(name: str, parent: str) -> dict[str, Any]:
    from loaders.registry import derived_options

    options = derived_options(name)
    if options is None or options["parent"] != parent:
        return {"parent": parent}
    return options


def _dataset_spec(name: str, options: dict[str, Any], path: tuple[str, ...], where: Where) -> Any:
    from loaders.registry import get_dataset

    try:
        return get_dataset(name, **options)
    except (ValueError, TypeError) as exc:
        raise where.error(path + first_key(str(exc), options), str(exc)) from None


def _sub(raw: dict[str, Any], key: str, path: tuple[str, ...], where: Where) -> dict[str, Any]:
    value = raw.get(key, {}) if raw else {}
    if not isinstance(value, dict):
        raise where.error(path + (key,), f"{key} must be a table of overrides, got {value!r}")
    return value
