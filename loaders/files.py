"""Atomic file writes and the sidecar JSON that marks a prepared file complete: a file counts
as finished only when its sidecar exists and records its fingerprint and exact size."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loaders.registry import DatasetError


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def temp_path(path: Path) -> Path:
    """A name in the same folder (so the rename is atomic) that never looks finished."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path to write and close; on success it replaces `path`, synced to
    disk with its folder, on error it is removed. (analysis.files.atomic_file is the same
    function for the rest of the project; loaders may import nothing of it.)"""
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def mark_complete(path: Path, fingerprint: str, **facts: Any) -> None:
    """Record a finished file: written after the file itself, so a crash leaves no marker."""
    write_json(sidecar(path), {"fingerprint": fingerprint, "bytes": path.stat().st_size, **facts})


def is_complete(path: Path, fingerprint: str) -> bool:
    """A finished file of this fingerprint (so it need not be written again)."""
    meta = read_json(sidecar(path))
    return (
        meta is not None
        and meta.get("fingerprint") == fingerprint
        and path.is_file()
        and path.stat().st_size == meta.get("bytes")
    )


def check_complete(path: Path) -> dict[str, Any]:
    """The sidecar of a finished file; a missing, unfinished or truncated file raises."""
    meta = read_json(sidecar(path))
    if not path.is_file():
        raise DatasetError(f"{path}: missing; run prepare again")
    if meta is None:
        raise DatasetError(
            f"{path}: no {sidecar(path).name} beside it, so it was never finished "
            f"(a crash while writing?); run prepare again"
        )
    size = path.stat().st_size
    if size != meta.get("bytes"):
        raise DatasetError(
            f"{path}: {size} bytes but {meta.get('bytes')} were written (truncated "
            f"or changed since); run prepare again"
        )
    return meta
