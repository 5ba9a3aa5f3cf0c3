"""build_loaders(): the training and test loaders of a prepared dataset on either backend,
behind one interface. Batches are float32 N,3,H,W normalised per channel (grayscale
replicated), channels_last on CUDA (ffcv's CPU batches are channels_last views too, at no
cost); labels int64 in 0..num_classes-1. Each epoch is a function of (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, TypedDict

import numpy as np
import torch

from loaders.augment import resolve_augment
from loaders.prepare import Prepared
from loaders.registry import BACKENDS


class TrainLoader(Protocol):
    @property
    def num_images(self) -> int: ...

    def __len__(self) -> int: ...

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class TestLoader(Protocol):
    @property
    def num_images(self) -> int: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class _Shared(TypedDict):
    """The loader options both splits of a dataset share."""

    resolution: int
    device: str
    augment: str
    mean: Sequence[float]
    std: Sequence[float]
    normalize: bool
    label_map: np.ndarray | None


def build_loaders(
    prepared: Prepared,
    batch_size: int = 128,
    resolution: int | None = None,
    device: str = "cpu",
    backend: str = "auto",
    num_workers: int = 2,
    *,
    test_batch_size: int | None = None,
    augment: str = "auto",
    normalize: bool = True,
) -> tuple[TrainLoader, TestLoader]:
    """Build the two loaders once; reuse them for every training on this dataset.

    `augment`: "rrc" (random-resized crop + flip; evaluation: centre crop 224/256 of the
    shorter side), "pad_crop" (zero-pad resolution/8, random crop + flip; evaluation: the
    whole image), "flip", "none", or "auto" (rrc above 64 px, else pad_crop).
    `normalize=False` gives uint8 batches (3 channels) instead, for measurements.
    `num_workers`: ffcv decoding threads (the memory backend needs none)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {list(BACKENDS)}")
    if backend not in ("auto", prepared.backend):
        raise ValueError(
            f"dataset {prepared.spec.name!r} was prepared for the {prepared.backend} "
            f"backend; prepare it with backend={backend!r} first, or ask for 'auto'"
        )
    if batch_size < 1 or (test_batch_size is not None and test_batch_size < 1):
        raise ValueError(f"batch sizes must be positive, got {batch_size} and {test_batch_size}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA device")
    resolution = resolution or prepared.spec.resolution
    common: _Shared = {
        "resolution": resolution,
        "device": device,
        "augment": resolve_augment(augment, resolution),
        "mean": prepared.mean,
        "std": prepared.std,
        "normalize": normalize,
        "label_map": prepared.label_map,
    }
    test_batch = test_batch_size or batch_size
    if prepared.backend == "memory":
        return _memory_loaders(prepared, batch_size, test_batch, common)
    return _ffcv_loaders(prepared, batch_size, test_batch, num_workers, common)


def _memory_loaders(
    prepared: Prepared, batch_size: int, test_batch: int, common: _Shared
) -> tuple[TrainLoader, TestLoader]:
    from loaders.memory import MemoryTestLoader, MemoryTrainLoader

    return (
        MemoryTrainLoader(
            prepared.train_file,
            prepared.train_labels,
            prepared.train_indices,
            batch_size=batch_size,
            **common,
        ),
        MemoryTestLoader(
            prepared.test_file,
            prepared.test_labels,
            prepared.test_indices,
            batch_size=test_batch,
            **common,
        ),
    )


def _ffcv_loaders(
    prepared: Prepared, batch_size: int, test_batch: int, num_workers: int, common: _Shared
) -> tuple[TrainLoader, TestLoader]:
    import numba

    from loaders.ffcv_loader import FfcvTestLoader, FfcvTrainLoader

    # numba's type stubs leave out the settings it reads from the environment.
    threads = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    workers = max(1, min(num_workers, threads))
    return (
        FfcvTrainLoader(
            prepared.train_file,
            len(prepared.train_labels),
            prepared.train_indices,
            batch_size=batch_size,
            num_workers=workers,
            train=True,
            **common,
        ),
        FfcvTestLoader(
            prepared.test_file,
            len(prepared.test_labels),
            prepared.test_indices,
            batch_size=test_batch,
            num_workers=workers,
            train=False,
            **common,
        ),
    )
