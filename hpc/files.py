"""Atomic writes into a study folder: a reader sees the old file or the whole new one, and
the new file gets the permissions a plain open() would give, so a group sharing a study
folder can read what another member's jobs wrote."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from analysis.schema import FILE_MODE


def temp_beside(path: Path) -> tuple[int, Path]:
    """A hidden temporary file next to `path` (same filesystem, so rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600 files
    return fd, Path(name)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
