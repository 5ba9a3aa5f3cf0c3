"""The loader rows of benchmarks/gpu.py: JPEG decoding and random-resized crop 224 + flip on
the CPU cores through FFCV, to the device, as the study's ImageNet family is loaded.

The .beton is written by the project's writer (`loaders.beton.write_beton`: JPEG quality 90,
sides up to 512 px kept, as the ImageNet preset prepares it) from synthetic 500x375 images
(the most common ImageNet training size) with a natural image's spectrum, so decoding costs
about what a photo costs (gpu_common.natural_images). Rows: anysweep's own training loader
(`loaders.ffcv_loader.FfcvTrainLoader`: seeded crops, normalised on the device) with every
core as a worker and with half of them, and bare FFCV's pipeline on the same file. Each epoch
runs under a watchdog: an ffcv loader whose thread died never returns.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_common import MEAN, STD, natural_images, say, sync, watchdog

STORED = (375, 500)  # height, width
RESOLUTION = 224
CLASSES = 1000
EPOCH_TIMEOUT_S = 120.0  # the first epoch compiles the pipeline (numba): about 5-10 s


@dataclass(frozen=True)
class Beton:
    path: Path
    images: int
    height: int
    width: int
    write_s: float
    kb_per_image: float
    resolution: int


def write(
    n: int,
    device: torch.device,
    tmp: Path,
    workers: int,
    stored: tuple[int, int] = STORED,
    resolution: int = RESOLUTION,
) -> Beton:
    """A JPEG .beton of `n` synthetic photos of `stored` (height, width), written by the
    project's writer, to be cropped to `resolution`."""
    from loaders.beton import write_beton
    from loaders.sources import Split

    height, width = stored
    images = natural_images(n, height, width, device)
    labels = np.random.default_rng(0).integers(0, CLASSES, n).astype(np.int64)
    path = tmp / f"photos-{width}x{height}-{n}.beton"
    start = time.perf_counter()
    write_beton(
        Split(labels, 3, images=images, origin="synthetic photos"),
        path,
        "gpu-benchmark",
        encoding="jpg",
        max_side=512,
        jpeg_quality=90,
        num_workers=workers,
        progress=False,
        stall_seconds=60.0,
    )
    seconds = time.perf_counter() - start
    from ffcv.reader import Reader

    kb = float(Reader(str(path)).alloc_table["size"].mean()) / 1e3  # the JPEG bytes alone
    return Beton(path, n, height, width, seconds, kb, resolution)


def project_loader(beton: Beton, batch_size: int, device: torch.device, workers: int) -> Any:
    """anysweep's FFCV training loader over the file, as build_loaders makes it for a study."""
    from loaders.ffcv_loader import FfcvTrainLoader

    return FfcvTrainLoader(
        beton.path,
        beton.images,
        None,
        None,
        batch_size=batch_size,
        resolution=beton.resolution,
        device=str(device),
        num_workers=workers,
        augment="rrc",
        mean=MEAN,
        std=STD,
        normalize=True,
        train=True,
        timeout=EPOCH_TIMEOUT_S,
    )


def bare_loader(beton: Beton, batch_size: int, device: torch.device, workers: int) -> Any:
    """Bare FFCV: rrc + flip decoded on the CPU, uint8 to the device (channels first, float and
    normalised there: NormalizeImage wants numpy on the CPU)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToDevice, ToTensor, ToTorchImage

    side = beton.resolution
    image = [
        RandomResizedCropRGBImageDecoder((side, side)),
        RandomHorizontalFlip(),
        ToTensor(),
        ToDevice(device, non_blocking=True),
        ToTorchImage(),
    ]
    label = [IntDecoder(), ToTensor(), ToDevice(device, non_blocking=True)]
    threads = torch.get_num_threads()
    loader = Loader(
        str(beton.path),
        batch_size=batch_size,
        num_workers=workers,
        order=OrderOption.RANDOM,
        drop_last=True,
        pipelines={"image": image, "label": label},
        seed=0,
    )
    torch.set_num_threads(threads)  # ffcv's Loader sets it to num_workers globally
    return loader


def batches(loader: Any, bare: bool, device: torch.device) -> Callable[[int], Iterator[int]]:
    """The batch sizes of one epoch of the loader, as a function of the epoch's number; each
    batch is on the device, float and normalised, before its size is yielded."""
    mean = torch.tensor(MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def run(epoch: int) -> Iterator[int]:
        if not bare:
            for _, y in loader.epoch(0, epoch):
                yield len(y)
            return
        for x, y in loader:
            x = x.to(torch.float32).sub_(mean).div_(std)
            yield len(y)

    return run


def timed_epoch(sizes: Iterator[int], device: torch.device) -> tuple[float, float, float]:
    """(seconds, images/s, images/s after the first batch) of one epoch: the first batch
    waits for the workers to start and the pipeline to fill, which a long epoch amortises."""
    sync(device)
    start = time.perf_counter()
    count, first_at, first = 0, start, 0
    for n in sizes:
        count += n
        if not first:
            first_at, first = time.perf_counter(), n
    sync(device)
    end = time.perf_counter()
    return end - start, count / (end - start), (count - first) / max(end - first_at, 1e-9)


def loader_row(
    beton: Beton,
    kind: str,
    workers: int,
    batch_size: int,
    device: torch.device,
    repeats: int,
) -> tuple[dict[str, Any], Any]:
    """One row (medians of the `repeats` epochs after the first, which compiles the
    pipeline), each epoch under a watchdog; and the loader, for more use."""
    make = bare_loader if kind == "bare ffcv" else project_loader
    loader = make(beton, batch_size, device, workers)
    epoch_of = batches(loader, kind == "bare ffcv", device)
    timed = [
        watchdog(lambda e=e: timed_epoch(epoch_of(e), device), EPOCH_TIMEOUT_S, f"{kind} {e}")
        for e in range(repeats + 1)
    ]
    steady = statistics.median(t[2] for t in timed[1:])
    row = asdict(beton) | {
        "path": str(beton.path),
        "loader": kind,
        "workers": workers,
        "cpus": len(os.sched_getaffinity(0)),
        "batch_size": batch_size,
        "first_epoch_s": timed[0][0],
        "epoch_images_per_s": statistics.median(t[1] for t in timed[1:]),
        "images_per_s": steady,
        "per_worker": steady / workers,
    }
    say(
        f"{kind} JPEG {beton.width}x{beton.height} -> rrc {beton.resolution}, {workers} workers: "
        f"{steady:,.0f} images/s ({steady / workers:,.0f} per worker; whole epochs "
        f"{row['epoch_images_per_s']:,.0f}), first epoch {timed[0][0]:.1f} s"
    )
    return row, loader


def report_lines(results: dict[str, Any]) -> list[str]:
    """The loader table of gpu.py's report (empty when no row ran)."""
    if not results.get("ffcv"):
        return []
    lines = [
        "",
        "## FFCV: JPEG decode + random-resized crop + flip on the CPU workers, to the device",
        "",
        "Synthetic photos (1/f spectrum) at JPEG quality 90, written by the project's writer; "
        "medians of the epochs after the first (which compiles the pipeline); img/s from each "
        "epoch's first batch to its last (whole epochs: from the epoch's start).",
        "",
        "| loader | stored px | KB/image | out px | images | workers (CPUs) | batch "
        "| write s | first epoch s | img/s | img/s per worker | img/s, whole epochs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["ffcv"]:
        lines.append(
            f"| {r['loader']} | {r['width']}x{r['height']} | {r['kb_per_image']:.0f} | "
            f"{r['resolution']} | {r['images']:,} | {r['workers']} ({r['cpus']}) | "
            f"{r['batch_size']} | {r['write_s']:.1f} | {r['first_epoch_s']:.1f} | "
            f"{r['images_per_s']:,.0f} | {r['per_worker']:,.0f} | "
            f"{r['epoch_images_per_s']:,.0f} |"
        )
    return lines
