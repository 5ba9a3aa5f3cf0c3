"""Fixtures of the loaders tests: small datasets in their exact on-disk formats (ImageNet
folders, CIFAR pickles, IDX files), built from real images of the offline sets."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loaders.formats import read_elpv
from loaders.registry import get_dataset

SYNSETS = ("n01440764", "n01443537", "n01484850")
SYNSET_NAMES = ("tench", "goldfish", "great white shark")


@pytest.fixture(scope="session")
def elpv_images() -> list[np.ndarray]:
    """40 real 300x300 grayscale ELPV images."""
    files, _, _ = read_elpv(get_dataset("elpv"))
    return [np.asarray(Image.open(f)) for f in files[:40]]


@pytest.fixture(scope="session")
def fashion_images() -> tuple[np.ndarray, np.ndarray]:
    """The first 600 Fashion-MNIST training images (28x28) and labels."""
    from loaders.formats import read_idx_dataset

    (x, y), _ = read_idx_dataset(get_dataset("fashion_mnist"))
    return x[:600, :, :, 0], y[:600]


def color(gray: np.ndarray) -> np.ndarray:
    """A 3-channel image whose channels differ, so channel order is tested."""
    return np.stack([gray, 255 - gray, gray // 2], axis=-1).astype(np.uint8)


@pytest.fixture(scope="session")
def make_imagenet(elpv_images) -> Callable[..., Path]:
    """Builds PATH/train/<synset>/*.JPEG, PATH/val/<synset>/*.JPEG and LOC_synset_mapping.txt."""

    def build(
        root: Path,
        train_per_class: int = 4,
        val_per_class: int = 2,
        flat_val: bool = False,
        size: tuple[int, int] = (80, 60),
    ) -> Path:
        images = iter(elpv_images * 4)
        rows = ["ImageId,PredictionString"]
        for c, synset in enumerate(SYNSETS):
            for split, count in (("train", train_per_class), ("val", val_per_class)):
                folder = root / split / (synset if split == "train" or not flat_val else "")
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    name = f"{synset}_{i}" if split == "train" else f"ILSVRC2012_val_{c:04d}{i:04d}"
                    rgb = Image.fromarray(color(next(images))).resize(size)
                    rgb.save(folder / f"{name}.JPEG", quality=95)
                    if split == "val":
                        rows.append(f"{name},{synset} 1 2 3 4")
        (root / "LOC_synset_mapping.txt").write_text(
            "".join(f"{s} {n}, other words\n" for s, n in zip(SYNSETS, SYNSET_NAMES, strict=True))
        )
        if flat_val:
            (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
        return root

    return build


def _pickle2(path: Path, obj: object) -> None:
    # The CIFAR files are protocol-2 pickles with bytes keys (written by Python 2).
    path.write_bytes(pickle.dumps(obj, protocol=2))


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """N,32,32,3 -> N,3072 rows: 1024 red, 1024 green, 1024 blue values."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def pad32(gray: np.ndarray) -> np.ndarray:
    return color(np.pad(gray, ((0, 0), (2, 2), (2, 2))))


@pytest.fixture(scope="session")
def make_cifar(fashion_images) -> Callable[..., tuple[Path, np.ndarray, np.ndarray]]:
    """Builds cifar-10-batches-py or cifar-100-python under a root; returns (root, train
    images, train labels) as written (images N,32,32,3)."""

    def build(
        root: Path, hundred: bool = False, per_batch: int = 20
    ) -> tuple[Path, np.ndarray, np.ndarray]:
        x, y = fashion_images
        images = pad32(x[: 6 * per_batch])
        labels = y[: 6 * per_batch].astype(int) * (7 if hundred else 1)
        if hundred:
            folder = root / "cifar-100-python"
            folder.mkdir(parents=True)
            names = [f"fine{i}".encode() for i in range(100)]
            _pickle2(
                folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"c"] * 20}
            )
            n = 5 * per_batch
            for name, sl in (("train", slice(0, n)), ("test", slice(n, None))):
                _pickle2(
                    folder / name,
                    {
                        b"data": cifar_rows(images[sl]),
                        b"fine_labels": labels[sl].tolist(),
                        b"coarse_labels": [0] * len(labels[sl]),
                        b"filenames": [],
                    },
                )
        else:
            folder = root / "cifar-10-batches-py"
            folder.mkdir(parents=True)
            _pickle2(
                folder / "batches.meta",
                {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072},
            )
            for b in range(6):
                sl = slice(b * per_batch, (b + 1) * per_batch)
                name = f"data_batch_{b + 1}" if b < 5 else "test_batch"
                _pickle2(
                    folder / name,
                    {
                        b"batch_label": name.encode(),
                        b"labels": labels[sl].tolist(),
                        b"data": cifar_rows(images[sl]),
                        b"filenames": [],
                    },
                )
        return root, images[: 5 * per_batch], labels[: 5 * per_batch]

    return build


@pytest.fixture(scope="session")
def fashion_memory(tmp_path_factory):
    """Fashion-MNIST capped at 1,200/300 images, prepared for the memory backend."""
    from loaders.prepare import prepare

    spec = get_dataset("fashion_mnist", max_train=1200, max_test=300, backend="memory")
    return prepare(spec, tmp_path_factory.mktemp("memory"), progress=False)
