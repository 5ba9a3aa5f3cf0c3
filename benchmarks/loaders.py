"""Training-loader throughput: this project's loaders against a torchvision ImageFolder
DataLoader, bare FFCV, and a torch DataLoader over arrays; prints images/s and ratios.

    python -m benchmarks.loaders [--images 2000] [--small-images 20000] [--workers 2]

Part 1, 224 px (random-resized crop + flip, batch 128): ~2,000 real ELPV cells (300x300,
colourised by a colour map so decoding is RGB work), saved as a JPEG class folder for
torchvision and prepared as JPEG and raw .beton files. Steady state: one warm-up epoch,
then timed epochs. Part 2, 28x28 and 32x32 (pad-and-crop + flip): Fashion-MNIST arrays
(32x32: padded and colourised), one epoch timed from building the loader, first batch and
compilation included: the memory backend (with the process's torch threads, and with one)
against our ffcv backend, bare FFCV and a torch DataLoader with the same augmentation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from loaders.formats import read_elpv, read_idx_dataset
from loaders.pipelines import build_loaders
from loaders.prepare import prepare
from loaders.registry import get_dataset

BATCH = 128


def colourise(gray: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["viridis"](gray)[..., :3] * 255).astype(np.uint8)


def write_folder(root: Path, count: int) -> None:
    """ELPV cells as colour JPEGs (quality 90) in two class folders."""
    files, labels, names = read_elpv(get_dataset("elpv"))
    for f, label in list(zip(files, labels, strict=True))[:count]:
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(colourise(np.asarray(Image.open(f)))).save(
            folder / (f.stem + ".jpg"), quality=90
        )


def images_per_s(epochs: Callable[[int], Iterable], timed: int, warmup: int = 1) -> float:
    """Steady-state images/s: `warmup` epochs untimed, then the best of `timed` epochs (other
    processes may share the cores)."""
    for e in range(warmup):
        for _ in epochs(e):
            pass
    best = 0.0
    for e in range(warmup, warmup + timed):
        count, start = 0, time.perf_counter()
        for images, _ in epochs(e):
            count += len(images)
        best = max(best, count / (time.perf_counter() - start))
    return best


def first_epoch_per_s(build: Callable[[], Callable[[int], Iterable]], repeats: int = 2) -> float:
    """images/s of one epoch timed from building the loader (first batch included); the best
    of `repeats` fresh builds, since other processes may share the cores."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(len(images) for images, _ in build()(0))
        best = max(best, count / (time.perf_counter() - start))
    return best


def torchvision_loader(root: Path, size: int, workers: int, normalize: bool, mean, std):
    from torchvision import datasets
    from torchvision import transforms as T

    steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    steps += [T.ToTensor(), T.Normalize(mean, std)] if normalize else [T.PILToTensor()]
    data = datasets.ImageFolder(str(root), transform=T.Compose(steps))
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=True,
        drop_last=True,
    )
    return lambda epoch: loader


def bare_ffcv(path: Path, size: int, workers: int, normalize: bool, mean, std, small: bool = False):
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import (
        NormalizeImage,
        RandomHorizontalFlip,
        RandomTranslate,
        ToTensor,
        ToTorchImage,
    )

    if small:
        image = [
            SimpleRGBImageDecoder(),
            RandomHorizontalFlip(),
            RandomTranslate(padding=size // 8),
        ]
    else:
        image = [RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip()]
    if normalize:
        image.append(NormalizeImage(np.array(mean) * 255, np.array(std) * 255, np.float32))
    image += [ToTensor(), ToTorchImage()]
    threads = torch.get_num_threads()
    loader = Loader(
        str(path),
        batch_size=BATCH,
        num_workers=workers,
        order=OrderOption.RANDOM,
        drop_last=True,
        pipelines={"image": image, "label": [IntDecoder(), ToTensor()]},
    )
    torch.set_num_threads(threads)
    return lambda epoch: loader


def ours(prepared, size: int, workers: int, normalize: bool, augment: str):
    train, _ = build_loaders(
        prepared,
        batch_size=BATCH,
        resolution=size,
        num_workers=workers,
        augment=augment,
        normalize=normalize,
    )
    return lambda epoch: train.epoch(seed=0, epoch=epoch)


def part_224(work: Path, count: int, workers: int, epochs: int) -> None:
    folder = work / "jpeg"
    write_folder(folder, count)
    spec = dict(
        source="folder", path=str(folder), resolution=224, backend="ffcv", test_fraction=0.05
    )
    jpg = prepare(get_dataset("bench_jpg", encoding="jpg", **spec), work / "data", progress=False)
    raw = prepare(get_dataset("bench_raw", encoding="raw", **spec), work / "data", progress=False)
    mean, std = (np.array(jpg.mean) / 255).tolist(), (np.array(jpg.std) / 255).tolist()
    print(
        f"\n224 px, random-resized crop + flip, {jpg.num_train} ELPV images (300x300, colour "
        f"JPEG folder / .beton), batch {BATCH}, {workers} workers"
    )
    measured: dict[tuple[str, str], float] = {}
    cases = [
        (
            "torchvision ImageFolder",
            "float normalised",
            lambda: torchvision_loader(folder, 224, workers, True, mean, std),
        ),
        (
            "torchvision ImageFolder",
            "uint8",
            lambda: torchvision_loader(folder, 224, workers, False, mean, std),
        ),
        (
            "bare ffcv, JPEG .beton",
            "float normalised",
            lambda: bare_ffcv(jpg.train_file, 224, workers, True, mean, std),
        ),
        ("loaders, JPEG .beton", "float normalised", lambda: ours(jpg, 224, workers, True, "rrc")),
        (
            "bare ffcv, raw .beton",
            "float normalised",
            lambda: bare_ffcv(raw.train_file, 224, workers, True, mean, std),
        ),
        ("loaders, raw .beton", "float normalised", lambda: ours(raw, 224, workers, True, "rrc")),
        (
            "bare ffcv, raw .beton",
            "uint8",
            lambda: bare_ffcv(raw.train_file, 224, workers, False, mean, std),
        ),
        ("loaders, raw .beton", "uint8", lambda: ours(raw, 224, workers, False, "rrc")),
    ]
    for name, output, make in cases:
        measured[(name, output)] = images_per_s(make(), epochs)
    for output in ("float normalised", "uint8"):
        tv = measured[("torchvision ImageFolder", output)]
        print(f" {output} output:")
        for (name, out), speed in measured.items():
            if out != output:
                continue
            notes = []
            if name.startswith("loaders"):
                goal = 1.5 if "JPEG" in name else 2.5
                notes.append(
                    f"{speed / tv:5.2f}x torchvision (goal {goal}x: {'met' if speed / tv >= goal else 'MISSED'})"
                )
                bare = measured[(name.replace("loaders", "bare ffcv"), out)]
                notes.append(
                    f"{speed / bare:5.2f}x bare ffcv (goal 0.95x: {'met' if speed / bare >= 0.95 else 'MISSED'})"
                )
            elif name.startswith("bare"):
                notes.append(f"{speed / tv:5.2f}x torchvision")
            print(f"  {name:<24} {speed:8,.0f} images/s  " + "  ".join(notes))


def with_threads(n: int, run: Callable[[], float]) -> float:
    """Run with n torch threads: the memory backend's batch ops are small, and on cores shared
    with other processes OpenMP's synchronisation of 2 threads can cost more than it gains."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return run()
    finally:
        torch.set_num_threads(before)


class _ArrayDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, mean, std) -> None:
        from torchvision.transforms import v2

        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.labels = torch.from_numpy(labels.copy())
        self.transform = v2.Compose(
            [
                v2.RandomCrop(size, padding=size // 8),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean, std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        return self.transform(image), self.labels[i]


def part_small(work: Path, count: int, workers: int) -> None:
    (x, y), (tx, ty) = read_idx_dataset(get_dataset("fashion_mnist"))
    x, y = x[:count], y[:count]
    sets = {28: (x, y), 32: (colourise(np.pad(x[..., 0], ((0, 0), (2, 2), (2, 2)))), y)}
    for size, (images, labels) in sets.items():
        arrays = {
            "x_train": images,
            "y_train": labels,
            "x_test": images[:500],
            "y_test": labels[:500],
        }
        print(
            f"\n{size}x{size}, pad-and-crop + flip, {len(labels):,} Fashion-MNIST images "
            f"({'gray' if images.ndim == 4 and images.shape[-1] == 1 else 'colour'}), one epoch "
            f"from building the loader (first batch and compilation included), batch {BATCH}"
        )
        common = dict(source="arrays", resolution=size)
        mem = prepare(
            get_dataset(f"small{size}_mem", backend="memory", **common),
            work / "data",
            progress=False,
            arrays=arrays,
        )
        ffc = prepare(
            get_dataset(f"small{size}_ffcv", backend="ffcv", **common),
            work / "data",
            progress=False,
            arrays=arrays,
        )
        mean, std = (np.array(mem.mean) / 255).tolist(), (np.array(mem.std) / 255).tolist()

        def torch_loader(images=images, labels=labels, size=size, mean=mean, std=std):
            data = _ArrayDataset(images, labels, size, mean, std)
            loader = torch.utils.data.DataLoader(
                data, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True
            )
            return lambda epoch: loader

        speeds = {
            "memory backend": first_epoch_per_s(
                lambda mem=mem, size=size: ours(mem, size, workers, True, "pad_crop")
            ),
            "memory, 1 torch thread": with_threads(
                1,
                lambda mem=mem, size=size: first_epoch_per_s(
                    lambda: ours(mem, size, workers, True, "pad_crop")
                ),
            ),
            "loaders ffcv backend": first_epoch_per_s(
                lambda ffc=ffc, size=size: ours(ffc, size, workers, True, "pad_crop")
            ),
            "bare ffcv": first_epoch_per_s(
                lambda ffc=ffc, size=size, m=mean, s=std: bare_ffcv(
                    ffc.train_file, size, workers, True, m, s, small=True
                )
            ),
            "torch DataLoader": first_epoch_per_s(torch_loader),
        }
        memory = max(speeds["memory backend"], speeds["memory, 1 torch thread"])
        for name, speed in speeds.items():
            note = (
                ""
                if name.startswith("memory")
                else (
                    f"  memory is {memory / speed:5.2f}x (goal 5x: {'met' if memory / speed >= 5 else 'MISSED'})"
                )
            )
            print(f"  {name:<22} {speed:9,.0f} images/s{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="224 px part: ELPV images")
    parser.add_argument("--small-images", type=int, default=20000, help="28/32 px part: images")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--epochs", type=int, default=2, help="timed epochs in the 224 px part (best counts)"
    )
    parser.add_argument("--skip", choices=["224", "small"], help="leave one part out")
    args = parser.parse_args()
    from loaders.ffcv_loader import _ffcv

    _ffcv()  # ffcv imported before any timing (about 3 s, once per process)

    torch.set_num_threads(args.workers)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.1f} at start, torch {torch.__version__}")
    work = Path(tempfile.mkdtemp(prefix="loaders-bench-"))
    try:
        if args.skip != "224":
            part_224(work, args.images, args.workers, args.epochs)
        if args.skip != "small":
            part_small(work, args.small_images, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other processes share these cores)")


if __name__ == "__main__":
    main()
