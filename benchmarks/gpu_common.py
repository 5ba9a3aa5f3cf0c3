"""What the GPU benchmark's parts share: the clock and progress lines, the time budget, the
results file (written after every row), synthetic data and a watchdog for calls that can hang.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from loaders.memory import MemoryTrainLoader

T0 = time.perf_counter()
MEAN, STD = np.array([125.3, 123.0, 113.9]), np.array([63.0, 62.1, 66.7])
CL, CONTIG = torch.channels_last, torch.contiguous_format
R = TypeVar("R")


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Budget:
    """Seconds since the start against --budget-s: a row runs only when its estimate fits."""

    def __init__(self, seconds: float, results: dict[str, Any]) -> None:
        self.seconds, self.results = seconds, results

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - T0)

    def allows(self, name: str, estimate_s: float) -> bool:
        """True when `estimate_s` fits in what is left; else the row is recorded as skipped."""
        if estimate_s <= self.left():
            return True
        say(f"{name}: skipped, about {estimate_s:.0f} s needed, {self.left():.0f} s left")
        self.results["skipped"].append(f"{name} (about {estimate_s:.0f} s needed)")
        return False


def save(results: dict[str, Any], report: Callable[[dict[str, Any]], str]) -> None:
    """Every figure so far as JSON and as markdown tables, written after every row so that a
    run cut short leaves what it measured."""
    out = Path(results["out"])
    for name, text in (
        ("gpu_results.json", json.dumps(results, indent=2, default=str)),
        ("gpu_results.md", report(results)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def watchdog(fn: Callable[[], R], timeout_s: float, what: str) -> R:
    """fn() in a daemon thread; TimeoutError after `timeout_s` (the thread is left behind:
    an ffcv loader whose thread died never returns)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name=f"watchdog: {what}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"{what}: no result in {timeout_s:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def synthetic(
    n: int, res: int, device: torch.device, classes: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """n uint8 N,H,W,C images and int64 labels: a colour per class plus Gaussian noise."""
    gen = torch.Generator(device=device).manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen, device=device)
    colours = torch.randint(80, 176, (classes, 1, 1, 3), generator=gen, device=device)
    images = torch.empty(n, res, res, 3, dtype=torch.uint8, device=device)
    for s in range(0, n, 1024):
        noise = torch.randn(min(1024, n - s), res, res, 3, generator=gen, device=device)
        pixels = colours[labels[s : s + 1024]] + 64 * noise
        images[s : s + 1024] = pixels.clamp_(0, 255).to(torch.uint8)
    return images, labels


def memory_loader(
    n: int,
    res: int,
    batch_size: int,
    device: torch.device,
    augment: str,
    tmp: Path,
    classes: int = 10,
) -> MemoryTrainLoader:
    """The memory backend's training loader over a synthetic split (one .npy, as prepared)."""
    images, labels = synthetic(n, res, device, classes)
    path = tmp / f"train-{device.type}-{res}px-{n}.npy"
    np.save(path, images.cpu().numpy())
    del images
    return MemoryTrainLoader(
        path,
        labels=labels.cpu().numpy(),
        indices=None,
        label_map=None,
        batch_size=batch_size,
        resolution=res,
        device=str(device),
        augment=augment,
        mean=MEAN,
        std=STD,
        normalize=True,
    )


def natural_images(
    n: int, height: int, width: int, device: torch.device, alpha: float = 1.25, seed: int = 0
) -> np.ndarray:
    """n uint8 N,H,W,3 images with a natural image's 1/f^alpha amplitude spectrum and
    correlated channels: at JPEG quality 90 about as large and as slow to decode as photos
    (500x375: about 80 KB, where pure noise takes 3-4x more bytes and time)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    fy = torch.fft.fftfreq(height, device=device).view(-1, 1)
    fx = torch.fft.rfftfreq(width, device=device).view(1, -1)
    amplitude = (fx**2 + fy**2).sqrt().clamp_min(1.0 / max(height, width)) ** -alpha
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for s in range(0, n, 128):
        m = min(128, n - s)
        parts = torch.randn(m, 3, height, width // 2 + 1, 2, generator=gen, device=device)
        img = torch.fft.irfft2(torch.view_as_complex(parts) * amplitude, s=(height, width))
        img = 0.8 * img.mean(1, keepdim=True) + 0.35 * img
        img = (img - img.mean((1, 2, 3), keepdim=True)) / img.std((1, 2, 3), keepdim=True)
        pixels = (128 + 50 * img).clamp_(0, 255).to(torch.uint8)
        out[s : s + m] = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return out


class ListLoader:
    """The same batches every epoch, behind the TrainLoader interface."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.num_images = sum(len(y) for _, y in batches)
        self.batch_size = len(batches[0][1])

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)


class EpochClock:
    """A training loader that times each epoch from its first batch to the moment the driver
    asks past its last one, the device synchronised at both ends: every member's steps on
    every batch are inside, evaluation is not."""

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.num_images = loader.num_images
        self.seconds: list[float] = []
        self.images: list[int] = []

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sync(self.device)
        start, count = time.perf_counter(), 0
        for images, labels in self.loader.epoch(seed, epoch):
            count += len(labels)
            yield images, labels
        sync(self.device)
        self.seconds.append(time.perf_counter() - start)
        self.images.append(count)
