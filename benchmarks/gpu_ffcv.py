"""The FFCV row of benchmarks/gpu.py: a JPEG .beton through FFCV's random-resized crop to the
device, against the in-memory backend on the same images.

`ffcv_row(args, device, results, tmp)` writes synthetic images as a JPEG .beton in `tmp`,
times FFCV's pipeline (decode + random-resized crop + flip on the CPU workers, uint8 to the
device, float normalised there) and the memory loader's (rrc on the device) over the same
images, and appends one row to results["ffcv"]. Without ffcv it records why and returns.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESOLUTION = 224  # output side; the stored images are 256 px, as in the loader benchmark
STORED = 256
JPEG_QUALITY = 90


def write_jpeg_beton(images: np.ndarray, labels: np.ndarray, path: Path, workers: int) -> None:
    """A .beton of uint8 HWC images as JPEG, with integer labels."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    class Samples:
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
            return images[i], int(labels[i])

    fields = {
        "image": RGBImageField(write_mode="jpg", jpeg_quality=JPEG_QUALITY),
        "label": IntField(),
    }
    DatasetWriter(str(path), fields, num_workers=workers).from_indexed_dataset(Samples())


def ffcv_loader(path: Path, batch_size: int, device: torch.device, workers: int) -> Any:
    """FFCV's training pipeline: rrc 224 + flip decoded on the CPU, then to the device,
    channels-first, float, normalised there (NormalizeImage before ToTensor needs numpy
    input on the CPU; on the device torch does it after the copy)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToDevice, ToTensor, ToTorchImage

    image = [
        RandomResizedCropRGBImageDecoder((RESOLUTION, RESOLUTION)),
        RandomHorizontalFlip(),
        ToTensor(),
        ToDevice(device, non_blocking=True),
        ToTorchImage(),
    ]
    label = [IntDecoder(), ToTensor(), ToDevice(device, non_blocking=True)]
    threads = torch.get_num_threads()
    loader = Loader(
        str(path),
        batch_size=batch_size,
        num_workers=workers,
        order=OrderOption.RANDOM,
        drop_last=True,
        pipelines={"image": image, "label": label},
        seed=0,
    )
    torch.set_num_threads(threads)  # ffcv's Loader sets it to num_workers globally
    return loader


def _ffcv_epoch(loader: Any, mean: torch.Tensor, std: torch.Tensor) -> int:
    count = 0
    for x, y in loader:
        x = x.to(torch.float32).sub_(mean).div_(std)
        count += len(y)
    return count


def _rate(run: Any, sync: Any, device: torch.device, repeats: int) -> tuple[float, float]:
    """(first epoch's seconds, median images/s of the `repeats` epochs after it)."""
    times, counts = [], []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        counts.append(run())
        sync(device)
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(c / t for c, t in zip(counts[1:], times[1:], strict=True))


def measure(
    bench: Any,
    n: int,
    batch_size: int,
    device: torch.device,
    tmp: Path,
    workers: int,
    repeats: int = 3,
) -> dict[str, Any]:
    """One row: FFCV from a JPEG .beton against the memory loader, both rrc 224 + flip;
    `bench` is gpu.py's module (its synthetic data, memory loader, sync and statistics)."""
    MEAN, STD, sync = bench.MEAN, bench.STD, bench.sync  # noqa: N806
    mem = bench.memory_loader(n, STORED, batch_size, device, "rrc", tmp)
    images = mem.images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    labels = mem.labels.cpu().numpy()
    path = tmp / f"ffcv-{STORED}px-{n}.beton"
    start = time.perf_counter()
    write_jpeg_beton(images, labels, path, workers)
    write_s = time.perf_counter() - start
    loader = ffcv_loader(path, batch_size, device, workers)
    mean = torch.tensor(MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    first, ffcv_rate = _rate(lambda: _ffcv_epoch(loader, mean, std), sync, device, repeats)
    epochs = iter(range(1, 10_000))
    mem_run = lambda: sum(len(y) for _, y in mem.epoch(0, next(epochs)))  # noqa: E731
    _, mem_rate = _rate(mem_run, sync, device, repeats)
    return {
        "images": n,
        "stored_px": STORED,
        "resolution": RESOLUTION,
        "batch_size": batch_size,
        "workers": workers,
        "beton_mb": path.stat().st_size / 1e6,
        "write_s": write_s,
        "ffcv_first_epoch_s": first,
        "ffcv": ffcv_rate,
        "memory": mem_rate,
        "ratio": ffcv_rate / mem_rate,
    }


def ffcv_row(
    args: Any, device: torch.device, results: dict[str, Any], tmp: Path, bench: Any
) -> None:
    """The hook gpu.py calls with itself as `bench`: appends the row to results["ffcv"], or
    the reason it did not run."""
    results.setdefault("ffcv", [])
    try:
        import ffcv  # noqa: F401
    except ImportError as e:
        results["skipped"].append(f"ffcv row: ffcv does not import ({e})")
        return
    n = 64 if args.smoke else 4096
    workers = 2 if device.type == "cpu" else 12
    try:
        row = measure(
            bench, n, args.batch_size, device, tmp, workers, repeats=1 if args.smoke else 3
        )
    except Exception as e:  # a failed row is reported, the other rows still run
        results["errors"].append(f"ffcv row: {type(e).__name__}: {e}")
        return
    results["ffcv"].append(row)
    print(
        f"[gpu] ffcv jpeg rrc {RESOLUTION}: {row['ffcv']:,.0f} images/s, "
        f"memory loader {row['memory']:,.0f} (ratio {row['ratio']:.3f})",
        flush=True,
    )


def report_lines(results: dict[str, Any]) -> list[str]:
    """The row's table for gpu.py's report (empty when it did not run)."""
    if not results.get("ffcv"):
        return []
    lines = [
        "",
        "## FFCV JPEG .beton to the device against the in-memory loader (rrc 224 + flip)",
        "",
        "| images | stored px | batch | workers | .beton MB | write s | ffcv first epoch s "
        "| ffcv img/s | memory img/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["ffcv"]:
        lines.append(
            f"| {r['images']:,} | {r['stored_px']} | {r['batch_size']} | {r['workers']} | "
            f"{r['beton_mb']:.1f} | {r['write_s']:.1f} | {r['ffcv_first_epoch_s']:.1f} | "
            f"{r['ffcv']:,.0f} | {r['memory']:,.0f} | {r['ratio']:.3f} |"
        )
    return lines
