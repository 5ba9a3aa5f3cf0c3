"""Writing and checking FFCV .beton files. ffcv is imported only inside the writing process,
so the parent never pays its import; a stalled or crashed writer becomes an error, never a
hang, and a bad sample an error naming it."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from loaders.files import atomic_path, is_complete, mark_complete
from loaders.images import check_headers, fit_max_side
from loaders.registry import DatasetError
from loaders.sources import Split

# No sample finished for this long: the writer is stuck (ffcv never re-raises a worker's
# exception); kill it.
STALL_SECONDS = 300.0
_MIN_PAGE = 1 << 21
_MAX_REPORTED = 10

# ffcv 1.0.2's file format (version 2), mirrored so a file can be checked without importing
# ffcv: header, field descriptors, per-sample metadata, pages, allocation table.
FORMAT_VERSION = 2
HEADER = np.dtype(
    [
        ("version", "<u2"),
        ("num_fields", "<u2"),
        ("page_size", "<u4"),
        ("num_samples", "<u8"),
        ("alloc_table_ptr", "<u8"),
    ],
    align=True,
)
FIELD_DESC = np.dtype(
    [("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True
)
ALLOC = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
IMAGE_META = np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])
SAMPLE_META = np.dtype([("image", IMAGE_META), ("label", "<i8")], align=True)


class _Samples:
    """What the ffcv writer's workers index: (RGB image, label). Never raises (a raising
    sample hangs ffcv's writer); a failure is flagged and a placeholder written instead."""

    def __init__(self, split: Split, max_side: int | None, failed, done) -> None:
        self.split, self.max_side, self.failed, self.done = split, max_side, failed, done

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        try:
            image = fit_max_side(self.split.image(i), self.max_side)
            if image.shape[2] == 1:
                image = np.repeat(image, 3, axis=2)
            sample = (np.ascontiguousarray(image), int(self.split.labels[i]))
        except Exception:
            self.failed[i] = 1
            sample = (np.zeros((1, 1, 3), np.uint8), 0)
        with self.done.get_lock():
            self.done.value += 1
        return sample


@functools.cache
def _ffcv_writer() -> Any:
    """Import ffcv's writer once (seconds), in the writing parent so forked writers inherit
    it; the import sets torch's thread count, which is restored."""
    import torch

    threads = torch.get_num_threads()
    import ffcv.writer

    torch.set_num_threads(threads)
    ffcv.writer.tqdm = lambda *a, **k: tqdm(*a, **k, disable=True)  # the parent shows progress
    return ffcv.writer


def _write_in_child(
    tmp: str, samples: _Samples, encoding: str, quality: int, page_size: int, workers: int, conn
) -> None:
    os.setpgrp()  # one process group: a stall kills ffcv's workers with us
    try:
        import cv2
        from ffcv.fields import IntField, RGBImageField

        cv2.setNumThreads(1)
        fields = {
            "image": RGBImageField(write_mode=encoding, jpeg_quality=quality),
            "label": IntField(),
        }
        _ffcv_writer().DatasetWriter(
            tmp, fields, page_size=page_size, num_workers=workers
        ).from_indexed_dataset(samples, chunksize=64)
        conn.send(("ok", ""))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def check_files(split: Split, num_workers: int = 1, progress: bool = False) -> tuple[int, int]:
    """Read every image file's header (cheap: no decoding) so missing, empty and non-image
    files fail before writing starts; returns the largest (width, height)."""
    if split.files is None:
        return (
            (split.images.shape[2], split.images.shape[1]) if split.images is not None else (0, 0)
        )
    width, height, errors = check_headers(split.files, num_workers, progress)
    _raise_errors(errors, len(split))
    return width, height


def _raise_errors(errors: list[str], total: int) -> None:
    if errors:
        shown = "\n  ".join(errors[:_MAX_REPORTED])
        more = (
            f"\n  ... and {len(errors) - _MAX_REPORTED} more" if len(errors) > _MAX_REPORTED else ""
        )
        raise DatasetError(f"{len(errors)} of {total} images could not be read:\n  {shown}{more}")


def _page_size(width: int, height: int, max_side: int | None) -> int:
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = int(width * scale) + 1, int(height * scale) + 1
    need = max(4 * _MIN_PAGE, 2 * width * height * 3)
    return 1 << (need - 1).bit_length()


def write_beton(
    split: Split,
    path: Path,
    fingerprint: str,
    *,
    encoding: str = "raw",
    max_side: int | None = None,
    jpeg_quality: int = 90,
    num_workers: int = 2,
    progress: bool = True,
    stall_seconds: float = STALL_SECONDS,
) -> None:
    """Write `split` as a .beton: atomic (a temporary name, renamed once checked), idempotent
    (a finished file of this fingerprint is kept), in `num_workers` processes with a progress
    bar. Bad images raise DatasetError naming them; a stalled writer raises RuntimeError."""
    if is_complete(path, fingerprint):
        return
    width, height = check_files(split, num_workers, progress)
    _ffcv_writer()
    n = len(split)
    ctx = mp.get_context("fork")
    failed = ctx.Array("b", n, lock=False)
    done = ctx.Value("q", 0)
    receive, send = ctx.Pipe(duplex=False)
    samples = _Samples(split, max_side, failed, done)
    with atomic_path(path) as tmp:
        child = ctx.Process(
            target=_write_in_child,
            args=(
                str(tmp),
                samples,
                encoding,
                jpeg_quality,
                _page_size(width, height, max_side),
                max(1, num_workers),
                send,
            ),
        )
        try:
            child.start()
            _watch(child, done, n, path, progress, stall_seconds)
            status, detail = (
                receive.recv() if receive.poll(1.0) else ("error", f"exit code {child.exitcode}")
            )
            if status != "ok":
                raise RuntimeError(f"writing {path} failed in the ffcv writer:\n{detail}")
            bad = np.flatnonzero(np.frombuffer(failed, dtype=np.int8))
            if len(bad):
                _raise_errors([_failure(split, int(i)) for i in bad], n)
            check_beton(tmp, n)
        finally:
            if child.is_alive():
                _kill(child)
    mark_complete(path, fingerprint, num_samples=n, encoding=encoding, max_side=max_side)


def _watch(child, done, total: int, path: Path, progress: bool, stall_seconds: float) -> None:
    bar = tqdm(total=total, desc=f"writing {path.name}", disable=not progress, unit="img")
    seen, last_change = 0, time.monotonic()
    try:
        while child.is_alive():
            child.join(0.2)
            now = done.value
            if now != seen:
                bar.update(now - seen)
                seen, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > stall_seconds:
                _kill(child)
                raise RuntimeError(
                    f"writing {path} stalled: no sample finished in {stall_seconds:.0f} s "
                    f"({seen} of {total} done); the writer was stopped"
                )
        bar.update(done.value - seen)
    finally:
        bar.close()


def _kill(child) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
    child.join(5)


def _failure(split: Split, i: int) -> str:
    """The error a flagged sample raises, reproduced here to name the file and the problem."""
    try:
        split.image(i)
    except Exception as e:
        return str(e)
    return f"{split.where(i)}: could not be encoded"


def check_beton(path: Path, num_samples: int | None = None) -> None:
    """The file's structure is whole: header, every sample's data inside the file, the
    allocation table at the end. A truncated or foreign file raises DatasetError naming it."""
    size = path.stat().st_size if path.is_file() else -1
    if size < 0:
        raise DatasetError(f"{path}: missing; run prepare again")
    fixed = HEADER.itemsize + 2 * FIELD_DESC.itemsize
    if size < fixed:
        raise DatasetError(f"{path}: truncated ({size} bytes, shorter than a .beton header)")
    header = np.fromfile(path, dtype=HEADER, count=1)[0]
    if header["version"] != FORMAT_VERSION or header["num_fields"] != 2:
        raise DatasetError(
            f"{path}: not a .beton of this project (format {header['version']}, "
            f"{header['num_fields']} fields)"
        )
    count, table_at = int(header["num_samples"]), int(header["alloc_table_ptr"])
    if num_samples is not None and count != num_samples:
        raise DatasetError(f"{path}: holds {count} samples, {num_samples} expected")
    if (
        not fixed + count * SAMPLE_META.itemsize <= table_at <= size
        or (size - table_at) % ALLOC.itemsize
    ):
        raise DatasetError(
            f"{path}: truncated ({size} bytes; its allocation table should start "
            f"at byte {table_at}); run prepare again"
        )
    meta = np.fromfile(path, dtype=SAMPLE_META, count=count, offset=fixed)
    table = np.fromfile(path, dtype=ALLOC, offset=table_at)
    ends = table["ptr"] + table["size"]
    if len(table) < count or (len(ends) and ends.max() > table_at):
        raise DatasetError(
            f"{path}: truncated or damaged (sample data beyond the allocation table)"
        )
    if not np.isin(meta["image"]["data_ptr"], table["ptr"]).all():
        raise DatasetError(f"{path}: damaged (an image points outside the written data)")
