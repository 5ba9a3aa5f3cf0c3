"""prepare(): read a dataset's source, check it, and write its files under data_dir (.beton
for the ffcv backend, .npy for the memory backend) once; open_prepared() opens them. A
subset or size control prepares its parent and selects from the parent's files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loaders.files import check_complete, is_complete, mark_complete, read_json, write_json
from loaders.registry import DatasetError, DatasetSpec, check_control_size
from loaders.sources import SourceData, Split, load_source, source_fingerprint
from loaders.subsets import ClassSelection, control_indices, select_classes, stratified_cap

# The memory backend is chosen ("auto") when the train set at training resolution fits.
MEMORY_BUDGET_BYTES = 2 * 2**30
# Training images sampled for the per-channel mean and standard deviation.
STATS_IMAGES = 500
MANIFEST_VERSION = 1
_CONTENT_KEYS = (
    "source",
    "path",
    "max_train",
    "max_test",
    "split_seed",
    "test_fraction",
    "binary",
    "label_names",
    "backend",
    "resolution",
    "encoding",
    "max_side",
    "jpeg_quality",
)


@dataclass(frozen=True)
class Prepared:
    """A prepared dataset, or a subset or size control selecting from its parent's files
    (`train_indices`, `test_indices`: the rows it reads; None: all of them)."""

    spec: DatasetSpec
    data_dir: Path
    backend: str  # "ffcv" or "memory"
    class_names: tuple[str, ...]
    num_train: int
    num_test: int
    channels: int  # of the source images (1: grayscale, replicated to 3 in batches)
    mean: tuple[float, float, float]  # per channel, 0..255 units
    std: tuple[float, float, float]
    train_file: Path
    test_file: Path
    train_labels: np.ndarray = field(repr=False, compare=False)  # labels of the whole file
    test_labels: np.ndarray = field(repr=False, compare=False)
    selection: ClassSelection | None = None  # a subset's classes, as parent labels
    train_indices: np.ndarray | None = field(default=None, repr=False, compare=False)
    test_indices: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_map(self) -> np.ndarray | None:
        return None if self.selection is None else self.selection.label_map


def _stem(spec: DatasetSpec, data_dir: Path) -> Path:
    return Path(data_dir) / spec.name


def manifest_path(spec: DatasetSpec, data_dir: Path) -> Path:
    return Path(str(_stem(spec, data_dir)) + ".prepared.json")


def _options(spec: DatasetSpec) -> dict[str, Any]:
    d = spec.to_dict()
    return {k: d.get(k) for k in _CONTENT_KEYS}


def _unused_options(spec: DatasetSpec) -> set[str]:
    """Options the source ignores, left out of prepared.json: binary is elpv's alone; a
    folder with train/ keeps its own split, so test_fraction does not apply."""
    unused = {"binary"} if spec.source != "elpv" else set()
    if spec.source == "folder" and spec.path and (Path(spec.path) / "train").is_dir():
        unused.add("test_fraction")
    return unused


def _recorded_options(spec: DatasetSpec) -> dict[str, Any]:
    return {k: v for k, v in _options(spec).items() if k not in _unused_options(spec)}


def _option_diff(recorded: dict[str, Any], spec: DatasetSpec) -> dict[str, Any]:
    """(prepared, asked) of each option that differs; an unused option a manifest leaves
    out is no difference (the source need not be reachable to know that)."""
    return {
        k: (recorded.get(k), v)
        for k, v in _options(spec).items()
        if recorded.get(k) != v and (k in recorded or k not in ("binary", "test_fraction"))
    }


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def choose_backend(spec: DatasetSpec, num_train: int, channels: int) -> str:
    if spec.backend != "auto":
        return spec.backend
    return "memory" if num_train * spec.resolution**2 * channels <= MEMORY_BUDGET_BYTES else "ffcv"


def _files(spec: DatasetSpec, data_dir: Path, backend: str) -> dict[str, Path]:
    ext = ".beton" if backend == "ffcv" else ".npy"
    stem = str(_stem(spec, data_dir))
    return {
        "train": Path(f"{stem}.train{ext}"),
        "test": Path(f"{stem}.test{ext}"),
        "train_labels": Path(f"{stem}.train.labels.npy"),
        "test_labels": Path(f"{stem}.test.labels.npy"),
    }


def prepare(
    spec: DatasetSpec,
    data_dir: str | Path,
    progress: bool = True,
    *,
    num_workers: int | None = None,
    arrays: Mapping[str, Any] | None = None,
) -> Prepared:
    """Write the dataset's files under data_dir unless finished files of the same source and
    options are there; every image and label is checked first. Returns the opened dataset."""
    data_dir = Path(data_dir)
    if spec.is_derived:
        prepare(spec.parent_spec(), data_dir, progress, num_workers=num_workers, arrays=arrays)
        return open_prepared(spec, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = source_fingerprint(spec, arrays)
    manifest = read_json(manifest_path(spec, data_dir))
    if (
        manifest
        and manifest.get("source_fingerprint") == fingerprint
        and not _option_diff(manifest.get("options") or {}, spec)
    ):
        try:
            return open_prepared(spec, data_dir)
        except DatasetError:
            pass  # a file is missing or damaged: write it again
    source = _capped(spec, load_source(spec, arrays))
    _validate(spec, source)
    backend = choose_backend(spec, len(source.train), source.channels)
    files = _files(spec, data_dir, backend)
    workers = num_workers or os.cpu_count() or 1
    for split_name in ("train", "test"):
        split: Split = getattr(source, split_name)
        key = _hash(fingerprint, _options(spec), backend, split_name)
        if backend == "memory":
            from loaders.memory import write_images

            write_images(
                split,
                files[split_name],
                key,
                spec.resolution,
                num_workers=workers,
                progress=progress,
            )
        else:
            from loaders.beton import write_beton

            write_beton(
                split,
                files[split_name],
                key,
                encoding=spec.encoding,
                max_side=spec.max_side,
                jpeg_quality=spec.jpeg_quality,
                num_workers=workers,
                progress=progress,
            )
        labels_path = files[f"{split_name}_labels"]
        if not is_complete(labels_path, key):
            with open(labels_path, "wb") as f:
                np.save(f, split.labels.astype(np.int64))
            mark_complete(labels_path, key, num_samples=len(split))
    mean, std = _stats(files["train"], source.train, backend)
    write_json(
        manifest_path(spec, data_dir),
        {
            "version": MANIFEST_VERSION,
            "name": spec.name,
            "options": _recorded_options(spec),
            "source_fingerprint": fingerprint,
            "backend": backend,
            "class_names": list(source.class_names),
            "channels": source.channels,
            "mean": mean,
            "std": std,
            "files": {k: p.name for k, p in files.items()},
        },
    )
    return open_prepared(spec, data_dir)


def open_prepared(spec: DatasetSpec, data_dir: str | Path) -> Prepared:
    """The prepared dataset, from data_dir alone (the source need not be reachable). Not
    prepared, prepared with other options, or a missing or truncated file: DatasetError."""
    data_dir = Path(data_dir)
    if spec.is_derived:
        parent = open_prepared(spec.parent_spec(), data_dir)
        return _subset(spec, parent) if spec.n is None else _control(spec, parent, spec.n)
    path = manifest_path(spec, data_dir)
    manifest = read_json(path)
    if manifest is None:
        raise DatasetError(
            f"dataset {spec.name!r} is not prepared in {data_dir} (no {path.name}); "
            f"run prepare first (anysweep prepare)"
        )
    diff = _option_diff(manifest.get("options") or {}, spec)
    if diff:
        raise DatasetError(
            f"dataset {spec.name!r} in {data_dir} was prepared with other options "
            f"(prepared, asked): {diff}; run prepare again"
        )
    files = {k: data_dir / name for k, name in manifest["files"].items()}
    counts = {k: check_complete(p)["num_samples"] for k, p in files.items()}
    labels = {s: np.load(files[f"{s}_labels"]) for s in ("train", "test")}
    for s in ("train", "test"):
        if counts[s] != len(labels[s]):
            raise DatasetError(
                f"{files[s]}: {counts[s]} images but {len(labels[s])} labels in "
                f"{files[f'{s}_labels']}; run prepare again"
            )
    return Prepared(
        spec=spec,
        data_dir=data_dir,
        backend=manifest["backend"],
        class_names=tuple(manifest["class_names"]),
        num_train=counts["train"],
        num_test=counts["test"],
        channels=manifest["channels"],
        mean=tuple(manifest["mean"]),
        std=tuple(manifest["std"]),
        train_file=files["train"],
        test_file=files["test"],
        train_labels=labels["train"],
        test_labels=labels["test"],
    )


def _subset(spec: DatasetSpec, parent: Prepared) -> Prepared:
    selection = select_classes(
        parent.num_classes, parent.class_names, spec.k, spec.subset_seed, spec.classes
    )
    train, test = selection.indices(parent.train_labels), selection.indices(parent.test_labels)
    return dataclasses.replace(
        parent,
        spec=spec,
        class_names=tuple(parent.class_names[c] for c in selection.classes),
        num_train=len(train),
        num_test=len(test),
        selection=selection,
        train_indices=train,
        test_indices=test,
    )


def _control(spec: DatasetSpec, parent: Prepared, n: int) -> Prepared:
    """The parent's classes and labels, n of its training images (`control_order`'s first n
    for the seed), and its whole test split."""
    check_control_size(spec.name, parent.spec.name, n, parent.num_classes, parent.num_train)
    train = control_indices(parent.train_labels, parent.num_classes, n, spec.subset_seed)
    return dataclasses.replace(parent, spec=spec, num_train=len(train), train_indices=train)


def _capped(spec: DatasetSpec, source: SourceData) -> SourceData:
    train = source.train.take(stratified_cap(source.train.labels, spec.max_train, spec.split_seed))
    test = source.test.take(stratified_cap(source.test.labels, spec.max_test, spec.split_seed))
    return SourceData(source.class_names, train, test)


def _validate(spec: DatasetSpec, source: SourceData) -> None:
    """Labels in range, no empty class, a test set: checked before anything is written."""
    n = len(source.class_names)
    if spec.num_classes is not None and spec.num_classes != n:
        raise DatasetError(
            f"dataset {spec.name!r} should have {spec.num_classes} classes but its "
            f"source has {n}: {list(source.class_names)[:20]}"
        )
    for name in ("train", "test"):
        split: Split = getattr(source, name)
        bad = np.flatnonzero((split.labels < 0) | (split.labels >= n))
        if len(bad):
            i = int(bad[0])
            raise DatasetError(
                f"{split.where(i)}: label {int(split.labels[i])} is outside the "
                f"{n} classes 0..{n - 1} ({len(bad)} such {name} labels)"
            )
    if len(source.test) == 0:
        raise DatasetError(f"dataset {spec.name!r}: the test split is empty")
    counts = np.bincount(source.train.labels, minlength=n)
    empty = [source.class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(
            f"dataset {spec.name!r}: classes {empty[:10]} have no training images"
            + (f" after max_train={spec.max_train}" if spec.max_train else "")
        )


def _stats(train_file: Path, split: Split, backend: str) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0..255 units, 3 values) over a seeded sample of training images."""
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(split))[:STATS_IMAGES])
    if backend == "memory":
        images = [np.load(train_file, mmap_mode="r")[pick]]
    else:
        images = [split.image(int(i)) for i in pick]
    total = np.zeros(images[0].shape[-1])
    squares = np.zeros_like(total)
    count = 0
    for image in images:
        pixels = np.asarray(image, dtype=np.float64).reshape(-1, image.shape[-1])
        total += pixels.sum(0)
        squares += (pixels**2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std = np.where(std < 1e-3, 1.0, std)
    if len(mean) == 1:
        mean, std = np.repeat(mean, 3), np.repeat(std, 3)
    return [float(v) for v in mean], [float(v) for v in std]
