"""The in-memory backend: a split stored as one N,H,W,C uint8 .npy at the training
resolution, loaded whole onto the training device; crops, flips and normalisation run there
in batches (no decoding, no workers, no compilation)."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from loaders import augment as aug
from loaders.files import atomic_path, is_complete, mark_complete
from loaders.images import square
from loaders.registry import DatasetError
from loaders.sources import Split

_CHUNK = 64
_MAX_REPORTED = 10
# The split being written, inherited by forked workers (so chunks carry only indices).
_work: Split | None = None


def _decode_chunk(args: tuple[list[int], int]) -> list[tuple[int, np.ndarray | str]]:
    indices, side = args
    split = _work
    assert split is not None
    out: list[tuple[int, np.ndarray | str]] = []
    for i in indices:
        try:
            out.append((i, square(split.image(i), side)))
        except DatasetError as e:
            out.append((i, str(e)))
    return out


def write_images(
    split: Split,
    path: Path,
    fingerprint: str,
    side: int,
    *,
    num_workers: int = 2,
    progress: bool = True,
) -> None:
    """Every image of `split` squared to side x side into one .npy (atomic; skipped when a
    finished file of this fingerprint exists). A bad image raises DatasetError naming it,
    and nothing is left behind."""
    if is_complete(path, fingerprint):
        return
    n, channels = len(split), split.channels
    errors: list[str] = []
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(n, side, side, channels)
        )
        bar = tqdm(total=n, desc=f"writing {path.name}", disable=not progress, unit="img")
        if split.images is not None and split.images.shape[1:3] == (side, side):
            out[:] = split.images
            bar.update(n)
        else:
            global _work
            _work = split
            chunks = [(list(range(s, min(s + _CHUNK, n))), side) for s in range(0, n, _CHUNK)]
            parallel = split.files is not None and num_workers > 1 and n > _CHUNK
            pool = mp.get_context("fork").Pool(num_workers) if parallel else None
            try:
                results = pool.imap(_decode_chunk, chunks) if pool else map(_decode_chunk, chunks)
                for chunk in results:
                    for i, value in chunk:
                        if isinstance(value, str):
                            errors.append(value)
                        else:
                            out[i] = value
                    bar.update(len(chunk))
            finally:
                _work = None
                if pool is not None:
                    pool.terminate()
        bar.close()
        if errors:
            shown = "\n  ".join(errors[:_MAX_REPORTED])
            more = (
                f"\n  ... and {len(errors) - _MAX_REPORTED} more"
                if len(errors) > _MAX_REPORTED
                else ""
            )
            raise DatasetError(f"{len(errors)} of {n} images could not be read:\n  {shown}{more}")
        out.flush()
        del out
    mark_complete(path, fingerprint, num_samples=n, shape=[n, side, side, channels])


class _Common:
    def __init__(
        self,
        images_path: Path,
        labels: np.ndarray,
        indices: np.ndarray | None,
        label_map: np.ndarray | None,
        batch_size: int,
        resolution: int,
        device: str,
        augment: str,
        mean: Sequence[float],
        std: Sequence[float],
        normalize: bool,
    ) -> None:
        self.device = torch.device(device)
        # A subset reads only its own rows from the parent's file.
        rows = (
            np.load(images_path)
            if indices is None
            else np.load(images_path, mmap_mode="r")[indices]
        )
        # Kept as N,C,H,W so every batch is a plain contiguous slice for the crops.
        self.images = torch.from_numpy(rows).to(self.device).permute(0, 3, 1, 2).contiguous()
        labels = labels if indices is None else labels[indices]
        if label_map is not None:
            labels = label_map[labels]
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.batch_size = batch_size
        self.resolution = resolution
        self.augment = augment
        self.normalize = normalize
        self.channels_last = self.device.type == "cuda"
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        """N,C,H,W (0..255, float or uint8) -> the batch handed to training."""
        if self.normalize:
            return aug.normalize(images, self.mean, self.std, self.channels_last)
        out = aug.to_rgb_uint8(
            images.round().clamp(0, 255).to(torch.uint8) if images.is_floating_point() else images
        )
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def _nchw(self, index: torch.Tensor) -> torch.Tensor:
        return self.images.index_select(0, index)

    def _eval(self, index: torch.Tensor) -> torch.Tensor:
        images = self._nchw(index)
        ratio = aug.eval_crop_ratio(self.augment)
        if ratio == 1.0 and images.shape[-1] == self.resolution:
            return self._finish(images)
        return self._finish(
            aug.center_crop_resize(images.to(torch.float32), self.resolution, ratio)
        )


class MemoryTrainLoader(_Common):
    """Training batches: a seeded permutation and seeded augmentation per (seed, epoch); the
    last partial batch is dropped (unless the set is smaller than one batch)."""

    def __len__(self) -> int:
        return max(1, self.num_images // self.batch_size)

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = aug.epoch_generator(seed, epoch)
        order = torch.randperm(self.num_images, generator=gen).to(self.device)
        for b in range(len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self._train(index, gen), self.labels.index_select(0, index)

    def _train(self, index: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        images = self._nchw(index)
        if self.augment == "none":
            return self._eval(index)
        if self.augment == "rrc":
            return self._finish(
                aug.random_resized_crop_flip(images.to(torch.float32), self.resolution, gen)
            )
        if images.shape[-1] != self.resolution:
            images = aug.resize_batch(images.to(torch.float32), self.resolution)
        pad = self.resolution // 8 if self.augment == "pad_crop" else 0
        return self._finish(aug.pad_crop_flip(images, pad, gen))


class MemoryTestLoader(_Common):
    """Evaluation batches in file order, with the evaluation transform."""

    def __len__(self) -> int:
        return -(-self.num_images // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(len(self)):
            index = torch.arange(
                b * self.batch_size,
                min((b + 1) * self.batch_size, self.num_images),
                device=self.device,
            )
            yield self._eval(index), self.labels.index_select(0, index)
