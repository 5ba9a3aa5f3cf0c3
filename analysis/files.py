"""Atomic files: a reader sees the old file or the whole new one, also after a crash (the new
file is on disk before the rename, and the rename before we return), and the new file has the
permissions a plain open() would give, so a group sharing a study folder reads what another
member's jobs wrote.

The one atomic writer of the project's study folders: analysis writes results through it, and
hpc everything else (records, manifests, architectures, checkpoints). loaders keeps the same
small function in loaders/files.py, since it may import nothing of the project.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The mode a plain open() gives under this process's umask (mkstemp makes 0600 files).
FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yields a hidden temporary path beside `path` (same filesystem) to write and close; it
    then replaces `path`, synced to disk with its folder. On an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)


def temporaries(path: Path | str) -> list[Path]:
    """The hidden temporary files `atomic_file(path)` made beside `path`: one is left behind
    only when its process was killed (SIGKILL) in the middle of a write."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def stale_temporaries(
    folder: Path | str, older_than_s: float, *, recursive: bool = True
) -> list[Path]:
    """Temporary files of `atomic_file` under `folder` (in it alone unless `recursive`) not
    written to for `older_than_s` seconds: no write takes that long, so their writers are
    gone."""
    now = time.time()
    found = []
    listed = Path(folder).rglob(".*.tmp") if recursive else Path(folder).glob(".*.tmp")
    for path in sorted(listed):
        with contextlib.suppress(FileNotFoundError):  # renamed or removed since listed
            if path.is_file() and now - path.stat().st_mtime > older_than_s:
                found.append(path)
    return found


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path | str, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, data: Any) -> None:
    write_text(path, json.dumps(data, indent=1) + "\n")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """A read-write descriptor of `path` (created when absent) under an exclusive lock, and
    still the file the path names: a file replaced while we waited is opened again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def append_locked(
    path: Path | str, data: bytes, whole_end: Callable[[bytes], int], *, sync: bool = True
) -> int:
    """Append `data` to `path` under an exclusive lock, after cutting the file back to
    `whole_end(its content)` (a tail left by a writer that died mid-append); with `sync` the
    bytes are on disk when this returns. Returns the offset `data` was written at."""
    path = Path(path)
    created = not path.exists()
    with _locked(path) as fd:
        end = whole_end(_read_all(fd))
        os.ftruncate(fd, end)
        written = os.pwrite(fd, data, end)
        while written < len(data):
            written += os.pwrite(fd, data[written:], end + written)
        if sync:
            os.fsync(fd)
    if created and sync:
        _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    return end


def rewrite_locked(path: Path | str, change: Callable[[bytes], bytes]) -> None:
    """Replace `path` with `change(its content)`, atomically and under the lock appenders
    take, so that no append is lost to the replacement."""
    path = Path(path)
    with _locked(path) as fd:
        new = change(_read_all(fd))
        with atomic_file(path) as tmp:
            tmp.write_bytes(new)
