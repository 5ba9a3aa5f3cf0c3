"""The FFCV backend: training and test loaders over .beton files. Each ffcv Loader is built
once and reseeded per (seed, epoch) through a small state array its compiled code reads, so
crops, flips and order depend on (seed, epoch, sample) only, whatever the thread count; its
batch buffers are kept from one epoch to the next."""

from __future__ import annotations

import contextlib
import functools
import queue
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numba
import numpy as np
import torch
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from loaders import augment as aug
from loaders.beton import check_beton

# No batch for this long (compilation included) means the loader thread is stuck.
BATCH_TIMEOUT_S = 600.0
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@intrinsic
def _as_pointer(typingctx, address):
    """An integer address as a void pointer, so compiled code reads memory Python can change."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@numba.njit(nogil=True, cache=False)
def _mix64(x):
    # splitmix64's finaliser: a counter-based generator, the same on every thread.
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(nogil=True)
def _uniform(key, n):
    return np.float64(_mix64(key + np.uint64(n) * _GOLDEN) >> np.uint64(11)) * (
        1.0 / 9007199254740992.0
    )


@numba.njit(nogil=True)
def _seeded_crop(height, width, scale, log_ratio, key):
    """torchvision's RandomResizedCrop box (top, left, h, w), drawn from `key` alone."""
    height, width = np.int64(height), np.int64(width)
    area = height * width
    for t in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * _uniform(key, 4 * t))
        aspect = np.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * _uniform(key, 4 * t + 1))
        w = np.int64(np.round(np.sqrt(target * aspect)))
        h = np.int64(np.round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = np.int64(_uniform(key, 4 * t + 2) * (height - h + 1))
            j = np.int64(_uniform(key, 4 * t + 3) * (width - w + 1))
            return i, j, h, w
    in_ratio = width / height
    lo, hi = np.exp(log_ratio[0]), np.exp(log_ratio[1])
    w, h = width, height
    if in_ratio < lo:
        h = np.int64(np.round(width / lo))
    elif in_ratio > hi:
        w = np.int64(np.round(height * hi))
    return (height - h) // 2, (width - w) // 2, h, w


@numba.njit(nogil=True)
def _mirror(image):
    width = image.shape[1]
    for y in range(image.shape[0]):
        for x in range(width // 2):
            for c in range(image.shape[2]):
                image[y, x, c], image[y, width - 1 - x, c] = (
                    image[y, width - 1 - x, c],
                    image[y, x, c],
                )


def _quiet_numba_finalizers() -> None:
    """numba's dispatcher finalizer raises KeyError for some of the functions ffcv compiles
    (its overloads lookup fails); raised during garbage collection, the error is printed, and
    printing it parses source (ast) inside whatever the program was doing, which can break an
    ast.parse in progress (CPython 3.11: "AST constructor recursion depth mismatch"). The
    cleanup is skipped instead."""
    from numba.core.dispatcher import _DispatcherBase

    # numba's type stubs leave out this private method, which its dispatcher calls.
    make = _DispatcherBase._make_finalizer  # type: ignore[attr-defined]
    if make.__name__ == "make_tolerant_finalizer":
        return  # already replaced

    def make_tolerant_finalizer(self):
        finalize = make(self)

        def finalizer():
            with contextlib.suppress(KeyError):
                finalize()

        return finalizer

    _DispatcherBase._make_finalizer = make_tolerant_finalizer  # type: ignore[attr-defined]


@functools.cache
def _ffcv() -> SimpleNamespace:
    """Import ffcv (about 3 s) once; its import sets torch's thread count, which is restored."""
    threads = torch.get_num_threads()
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import (
        IMAGE_MODES,
        CenterCropRGBImageDecoder,
        RandomResizedCropRGBImageDecoder,
    )
    from ffcv.libffcv import imdecode, resize_crop
    from ffcv.loader import Loader, OrderOption
    from ffcv.loader.epoch_iterator import IS_CUDA, EpochIterator
    from ffcv.pipeline.compiler import Compiler
    from ffcv.transforms import NormalizeImage, ToDevice, ToTensor, ToTorchImage
    from ffcv.traversal_order.base import TraversalOrder

    torch.set_num_threads(threads)

    _quiet_numba_finalizers()
    run = EpochIterator.run
    if run.__name__ != "run_keeping_error":
        # ffcv prints a loader thread's exception and leaves next() waiting forever; keep the
        # exception so the waiting side can raise it.
        def run_keeping_error(self):
            try:
                run(self)
            except BaseException as e:
                self.error = e
                raise

        EpochIterator.run = run_keeping_error

    class SeededOrder(TraversalOrder):
        """A permutation of the indices seeded by (seed, epoch) from the loader's state."""

        def sample_order(self, epoch: int) -> np.ndarray:
            seed, ep = (int(v) for v in self.loader.seed_state)
            return np.random.default_rng([seed, ep]).permutation(self.indices)

    class SeededCropFlipDecoder(RandomResizedCropRGBImageDecoder):
        """Decode, random-resized crop and flip, each draw a function of (seed, epoch, sample)."""

        def __init__(self, output_size: tuple[int, int], state: np.ndarray) -> None:
            super().__init__(output_size, scale=aug.RRC_SCALE, ratio=aug.RRC_RATIO)
            self.state = state  # kept alive: the compiled code reads it by address

        def generate_code(self):
            jpg = IMAGE_MODES["jpg"]
            mem_read = self.memory_read
            my_range = Compiler.get_iterator()
            imdecode_c = Compiler.compile(imdecode)
            resize_crop_c = Compiler.compile(resize_crop)
            scale = np.array(self.scale, dtype=np.float64)
            log_ratio = np.log(np.array(self.ratio, dtype=np.float64))
            address = self.state.ctypes.data

            def decode(batch_indices, my_storage, metadata, storage_state):
                destination, temp_storage = my_storage
                state = numba.carray(_as_pointer(address), (2,), np.int64)
                base = _mix64(_mix64(np.uint64(state[0])) ^ (np.uint64(state[1]) * _GOLDEN))
                for dst_ix in my_range(len(batch_indices)):
                    source_ix = batch_indices[dst_ix]
                    field = metadata[source_ix]
                    image_data = mem_read(field["data_ptr"], storage_state)
                    height = np.uint32(field["height"])
                    width = np.uint32(field["width"])
                    if field["mode"] == jpg:
                        temp_buffer = temp_storage[dst_ix]
                        imdecode_c(
                            image_data,
                            temp_buffer,
                            height,
                            width,
                            height,
                            width,
                            0,
                            0,
                            1,
                            1,
                            False,
                            False,
                        )
                        selected = 3 * height * width
                        temp_buffer = temp_buffer.reshape(-1)[:selected].reshape(height, width, 3)
                    else:
                        temp_buffer = image_data.reshape(height, width, 3)
                    key = _mix64(base ^ np.uint64(source_ix))
                    i, j, h, w = _seeded_crop(height, width, scale, log_ratio, key)
                    resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
                    if _uniform(key, 40) < 0.5:
                        _mirror(destination[dst_ix])
                return destination[: len(batch_indices)]

            decode.is_parallel = True
            return decode

    return SimpleNamespace(
        Loader=Loader,
        OrderOption=OrderOption,
        IS_CUDA=IS_CUDA,
        IntDecoder=IntDecoder,
        CenterCropRGBImageDecoder=CenterCropRGBImageDecoder,
        NormalizeImage=NormalizeImage,
        ToDevice=ToDevice,
        ToTensor=ToTensor,
        ToTorchImage=ToTorchImage,
        SeededOrder=SeededOrder,
        SeededCropFlipDecoder=SeededCropFlipDecoder,
    )


class _KeptBuffers:
    """ffcv allocates every buffer of an epoch (decoding scratch for `batches_ahead + 2`
    batches of the largest image, outputs; pinned on CUDA machines) anew for each epoch, and
    the kernel then zero-fills each page at first touch: on ELPV (300 px JPEGs, batch 64)
    about 0.07 CPU s per epoch, a fifth of the loader's CPU time for 512 images. Installed as
    the Loader graph's `allocate_memory`, this hands an epoch the buffers of the one before
    once that epoch's thread has ended (an abandoned epoch whose thread still runs gets new
    ones). `fresh` counts the allocations made."""

    def __init__(self, graph: Any) -> None:
        self.allocate = graph.allocate_memory
        self.last: Any = None  # the last epoch's EpochIterator, holding its buffers
        self.fresh = 0
        graph.allocate_memory = self

    def __call__(self, batch_size: int, slots: int) -> Any:
        last, self.last = self.last, None
        if last is not None and not last.is_alive():
            if _ffcv().IS_CUDA:
                torch.cuda.synchronize()  # kernels queued on the last epoch's batches are done
            return last.memory_allocations
        self.fresh += 1
        return self.allocate(batch_size, slots)

    def retire(self, epoch_iterator: Any) -> None:
        """The epoch is over for its consumer; its buffers may serve the next one."""
        self.last = epoch_iterator


def _guarded(
    loader: Any, timeout: float, threads: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate an ffcv Loader; a dead loader thread or a stall raises RuntimeError instead of
    blocking forever, and torch's thread count (which ffcv changes) is restored."""
    ff = _ffcv()
    it = iter(loader)
    torch.set_num_threads(threads)
    first = True
    try:
        while True:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    item = it.output_queue.get(timeout=0.1)
                    break
                except queue.Empty:
                    if not it.is_alive() and it.output_queue.empty():
                        error = getattr(it, "error", None)
                        raise RuntimeError(
                            f"the ffcv loader of {loader.fname} stopped: {error!r}"
                        ) from error
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the ffcv loader of {loader.fname} gave no batch in {timeout:.0f} s"
                        ) from None
            if item is None:
                it.join(timeout)  # it has sent its last batch: its buffers are free on return
                return
            slot, result = item
            if ff.IS_CUDA:
                it.current_stream.wait_stream(it.cuda_streams[slot])
            if first:
                torch.set_num_threads(threads)  # the loader thread set it when it started
                first = False
            yield result
    finally:
        it.close()
        loader.kept.retire(it)
        torch.set_num_threads(threads)


class _FfcvCommon:
    def __init__(
        self,
        path: Path,
        num_samples: int,
        indices: np.ndarray | None,
        label_map: np.ndarray | None,
        batch_size: int,
        resolution: int,
        device: str,
        num_workers: int,
        augment: str,
        mean: Sequence[float],
        std: Sequence[float],
        normalize: bool,
        train: bool,
        timeout: float = BATCH_TIMEOUT_S,
    ) -> None:
        check_beton(path, num_samples)
        ff = _ffcv()
        self.device = torch.device(device)
        self.batch_size, self.resolution, self.augment = batch_size, resolution, augment
        self.normalize, self.timeout = normalize, timeout
        self.state = np.zeros(2, dtype=np.int64)
        self.indices = np.arange(num_samples) if indices is None else np.asarray(indices)
        self.label_map = (
            None if label_map is None else torch.as_tensor(label_map, device=self.device)
        )
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        on_cpu = self.device.type == "cpu"
        # NormalizeImage goes before ToTensor on the CPU (the other order makes ffcv loop
        # forever); on CUDA it needs cupy, so normalisation runs in torch there.
        self.fused_normalize = normalize and on_cpu and (augment in ("rrc", "none") or not train)
        if train and augment == "rrc":
            decoder = ff.SeededCropFlipDecoder((resolution, resolution), self.state)
        else:
            decoder = ff.CenterCropRGBImageDecoder(
                (resolution, resolution), aug.eval_crop_ratio(augment)
            )
        image = [decoder]
        if self.fused_normalize:
            image.append(
                ff.NormalizeImage(
                    np.asarray(mean, np.float64), np.asarray(std, np.float64), np.float32
                )
            )
        image.append(ff.ToTensor())
        label = [ff.IntDecoder(), ff.ToTensor()]
        if not on_cpu:
            image.append(ff.ToDevice(self.device, non_blocking=True))
            label.append(ff.ToDevice(self.device, non_blocking=True))
        image.append(ff.ToTorchImage(channels_last=True))
        self.pipelines = {"image": image, "label": label}
        self.path, self.train = path, train
        self.num_workers = max(1, num_workers)
        self.drop_last = train and len(self.indices) >= batch_size
        self._loader: Any = None

    @property
    def loader(self) -> Any:
        """The ffcv Loader, made at first use (each one compiles its pipeline, seconds)."""
        if self._loader is None:
            ff = _ffcv()
            threads = torch.get_num_threads()
            loader = ff.Loader(
                str(self.path),
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                order=ff.OrderOption.RANDOM if self.train else ff.OrderOption.SEQUENTIAL,
                indices=self.indices,
                drop_last=self.drop_last,
                pipelines=self.pipelines,
                seed=0,
            )
            loader.seed_state = self.state
            if self.train:
                loader.traversal_order = ff.SeededOrder(loader)
            torch.set_num_threads(threads)  # ffcv's Loader sets it to num_workers
            loader.kept = _KeptBuffers(loader.graph)
            self._loader = loader
        return self._loader

    @property
    def num_images(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self, gen: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        threads = torch.get_num_threads()
        for images, labels in _guarded(self.loader, self.timeout, threads):
            labels = labels.view(-1).to(torch.int64)
            if self.label_map is not None:
                labels = self.label_map[labels]
            if gen is not None and self.augment in ("pad_crop", "flip"):
                pad = self.resolution // 8 if self.augment == "pad_crop" else 0
                images = aug.pad_crop_flip(images, pad, gen)
            if self.fused_normalize:
                yield images, labels
            elif self.normalize:
                yield aug.normalize(images, self.mean, self.std, self.device.type == "cuda"), labels
            else:
                yield images, labels


class FfcvTrainLoader(_FfcvCommon):
    """Training batches; `epoch(seed, epoch)` reseeds the one ffcv Loader (no recompilation).
    Batches on the CPU may be reused buffers: copy what is kept past the next batch."""

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.state[:] = (aug.mix_seed(seed) & (2**62 - 1), epoch)
        return self._batches(aug.epoch_generator(seed, epoch))


class FfcvTestLoader(_FfcvCommon):
    """Evaluation batches in file order, with the evaluation transform."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(None)
