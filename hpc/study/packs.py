"""Packs: the file each array task appends its cells' records to (`results/<dataset>/
<task>.pack`), one record per finished, diverged or failed attempt, each append atomic and
verifiable (analysis.schema's record format; analysis.files' locked append). A requeued
task appends to the same pack; a pack only grows, except when records are set aside
(`set_aside`), which rewrites it whole under the appenders' lock.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analysis.files import append_locked, rewrite_locked
from analysis.schema import (
    CellResult,
    CorruptResultError,
    PackScan,
    decode_record,
    encode_record,
    record_payload,
    scan_records,
    whole_records_end,
)
from hpc.study.layout import PACK_SUFFIX, StudyLayout

if TYPE_CHECKING:
    from hpc.study.index import ResultsIndex


@dataclass(frozen=True)
class Entry:
    """One record to append: a cell's result, its log, and the digests of what it trained
    with (hpc.study.fingerprint)."""

    result: CellResult
    log: str
    config: bytes
    arch: bytes
    written: float | None = None  # None: when appended


@dataclass(frozen=True)
class Stored:
    """A record read back: the cell's result, its log, when and where it was written."""

    result: CellResult
    log: str
    written: float
    offset: int


def append(path: Path, entries: Sequence[Entry], *, sync: bool = True) -> int:
    """Append records to a pack in one locked write (synced to disk unless `sync` is
    False: synthetic studies only). Returns the offset of the first."""
    now = time.time()
    data = b"".join(
        encode_record(
            e.result,
            e.log,
            config=e.config,
            arch=e.arch,
            written=now if e.written is None else e.written,
        )
        for e in entries
    )
    return append_locked(path, data, whole_records_end, sync=sync)


def read(path: Path, start: int = 0) -> tuple[PackScan, bytes]:
    """The records of a pack from byte `start` on, and the bytes they were read from (the
    bytes begin at `start`)."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read()
    return scan_records(data, 0, start), data


def stored(path: Path) -> list[Stored]:
    """Every record of a pack, decoded; none when the pack does not exist."""
    try:
        scan, data = read(path)
    except FileNotFoundError:
        return []
    out = []
    for offset, written in zip(scan.columns["offset"], scan.columns["written"], strict=True):
        result, log = decode_record(record_payload(data, offset))
        out.append(Stored(result, log, written, offset))
    return out


def payloads(path: Path, offsets: Iterable[int]) -> dict[int, bytes]:
    """The payloads of the records at these offsets of a pack, read in one pass."""
    with open(path, "rb") as handle:
        data = handle.read()
    return {offset: record_payload(data, offset) for offset in offsets}


def set_aside(packs: Mapping[Path, Sequence[int]], keep: Path) -> int:
    """Move the records at the given offsets of each pack to the pack `keep` (kept for
    reading, read by no verb), then rewrite each pack without them. A crash between the two
    leaves a copy in `keep` and the records in place: nothing is lost. Returns how many."""
    moved = 0
    for path, offsets in packs.items():
        wanted = set(offsets)
        if not wanted:
            continue
        with open(path, "rb") as handle:
            data = handle.read()
        chunks = [_record_bytes(data, offset) for offset in sorted(wanted)]
        append_locked(keep, b"".join(chunks), whole_records_end)
        rewrite_locked(path, functools.partial(_without, offsets=wanted))
        moved += len(chunks)
    return moved


def _record_bytes(data: bytes, offset: int) -> bytes:
    from analysis.schema import RECORD_HEADER

    payload = record_payload(data, offset)
    return data[offset : offset + RECORD_HEADER.size + len(payload)]


def _without(data: bytes, offsets: set[int]) -> bytes:
    """The pack's sound records but those at `offsets`, in order (torn bytes dropped)."""
    scan = scan_records(data)
    if scan.corrupt:
        raise CorruptResultError(
            f"a pack holds corrupt records at offsets {[o for o, _ in scan.corrupt]}; "
            "it is left as it is"
        )
    kept = [_record_bytes(data, o) for o in scan.columns["offset"] if o not in offsets]
    return b"".join(kept)


def set_aside_rows(layout: StudyLayout, index: ResultsIndex, rows: np.ndarray, why: str) -> int:
    """Set aside the index's records at `rows` (`why`: reset, stale) under
    jobs/<why>/<stamp>/: pack records into one pack per dataset there, one-cell result
    files moved there as they are. The next index update no longer sees them. Returns how
    many."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    records = index.records
    by_pack: dict[int, list[int]] = {}
    for row in np.asarray(rows).tolist():
        by_pack.setdefault(int(records["pack"][row]), []).append(int(records["offset"][row]))
    moved = 0
    for pack, offsets in sorted(by_pack.items()):
        path = layout.root / index.pack_paths[pack]
        dataset = index.datasets[int(records["dataset"][records["pack"] == pack][0])]
        if index.pack["legacy"][pack]:
            target = (
                layout.reset_dir(stamp, dataset)
                if why == "reset"
                else layout.set_aside(why, stamp, dataset).with_suffix("")
            )
            target.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target / path.name)
            moved += 1
        else:
            moved += set_aside({path: offsets}, layout.set_aside(why, stamp, dataset))
    return moved


def cell_records(layout: StudyLayout, dataset: str, arch_id: int, seed: int) -> list[Stored]:
    """Every record of one cell in its dataset's packs, oldest first (reads every pack of
    the dataset: for one cell of a small study; verbs go through the results index)."""
    found = []
    for path in sorted(layout.results_dir(dataset).glob(f"*{PACK_SUFFIX}")):
        found += [s for s in stored(path) if (s.result.arch_id, s.result.seed) == (arch_id, seed)]
    return sorted(found, key=lambda s: s.written)
