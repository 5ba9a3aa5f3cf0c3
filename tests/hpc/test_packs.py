"""Packs and the results index: each append whole or not at all, a torn end cut off by the
next writer and never read, corruption in the middle reported and stepped over, records set
aside under jobs/, the one rule of which record counts, and an index that reads only what
was appended since it last looked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.schema import (
    RECORD_HEADER,
    CellResult,
    CorruptResultError,
    decode_record,
    encode_record,
    record_payload,
    scan_records,
)
from hpc.study import packs
from hpc.study.index import load_index, update_index
from hpc.study.population import sample_architectures
from hpc.study.results import Grid, choose, counting, standing
from hpc.study.spec import load_study
from tests.hpc.conftest import append_result

STUDY = """\
[study]
architectures = 3
seeds = 2
max_attempts = 2

[design]
max_depth = 1
max_width = 16
stem = "small"
resolution = 16
num_classes = 10

[recipe]
epochs = 2

[datasets.digits]

[datasets.fashion_mnist]
max_train = 300
"""


@pytest.fixture
def study(tmp_path: Path):
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path)
    sample_architectures(study)
    return study


def _cell(arch_id: int = 3, status: str = "done", **fields) -> CellResult:
    curves = {"test_top1_err": np.array([50.0, 12.5]), "train_loss": np.array([2.3, 0.4])}
    return CellResult(
        "digits", arch_id, 1, status, top1_err=12.5, epochs=2, curves=curves, **fields
    )


def _record(cell: CellResult, log: str = "epoch 1/2\n") -> bytes:
    return encode_record(cell, log, config=b"c" * 8, arch=b"a" * 8, written=1000.0)


def test_a_record_holds_the_cell_its_log_and_what_status_reads_in_its_header() -> None:
    cell = _cell(error="", recipe='{"epochs": 2}', spec='{"name": "digits"}')
    data = _record(cell, "epoch 1/2: loss 2.3\n")
    scan = scan_records(data)
    assert (scan.end, scan.torn, scan.corrupt, len(scan)) == (len(data), False, [], 1)
    header = {k: v[0] for k, v in scan.columns.items()}
    assert (header["arch_id"], header["seed"], header["status"], header["attempts"]) == (3, 1, 0, 1)
    assert (header["written"], header["config"], header["arch"]) == (1000.0, b"c" * 8, b"a" * 8)
    back, log = decode_record(record_payload(data, 0))
    assert log == "epoch 1/2: loss 2.3\n"
    assert (back.top1_err, back.recipe, back.spec) == (12.5, '{"epochs": 2}', '{"name": "digits"}')
    assert back.curves["test_top1_err"].tolist() == [50.0, 12.5]


def test_a_torn_end_is_never_read_and_the_next_append_cuts_it_off(tmp_path: Path) -> None:
    pack = tmp_path / "p.pack"
    first, second = _record(_cell(0)), _record(_cell(1))
    for cut in (5, RECORD_HEADER.size - 1, RECORD_HEADER.size + 3, len(second) - 1):
        pack.write_bytes((first + second)[: len(first) + len(second) - cut])  # cut short
        scan = scan_records(pack.read_bytes())
        assert (len(scan), scan.torn, scan.corrupt, scan.end) == (1, True, [], len(first))
    packs.append(pack, [packs.Entry(_cell(2), "", b"c" * 8, b"a" * 8)])
    scan = scan_records(pack.read_bytes())
    assert [a for a in scan.columns["arch_id"]] == [0, 2] and not scan.torn


def test_a_damaged_record_in_the_middle_is_reported_and_stepped_over() -> None:
    records = [_record(_cell(a)) for a in range(3)]
    data = bytearray(b"".join(records))
    data[len(records[0]) + RECORD_HEADER.size + 10] ^= 0xFF  # a bit of the second's payload
    scan = scan_records(bytes(data))
    assert scan.columns["arch_id"] == [0, 2]
    assert scan.corrupt == [(len(records[0]), "bad payload checksum")]
    with pytest.raises(CorruptResultError, match="bad payload checksum"):
        record_payload(bytes(data), len(records[0]))


def test_records_set_aside_leave_the_pack_and_are_kept(tmp_path: Path) -> None:
    pack, keep = tmp_path / "p.pack", tmp_path / "jobs" / "stale" / "s" / "digits.pack"
    entries = [packs.Entry(_cell(a), f"log {a}", b"c" * 8, b"a" * 8) for a in range(3)]
    packs.append(pack, entries)
    offsets = [s.offset for s in packs.stored(pack)]
    assert packs.set_aside({pack: [offsets[1]]}, keep) == 1
    assert [s.result.arch_id for s in packs.stored(pack)] == [0, 2]
    assert [(s.result.arch_id, s.log) for s in packs.stored(keep)] == [(1, "log 1")]


def test_one_rule_picks_the_record_that_counts() -> None:
    # cell 0: failed twice then done; cell 1: done twice (two launches); cell 2: failed
    # attempts 1 and 2; cell 3: a stale done and a current failure.
    key = [0, 0, 0, 1, 1, 2, 2, 3, 3]
    status = [2, 2, 0, 0, 0, 2, 2, 0, 2]
    attempts = [1, 2, 3, 1, 1, 1, 2, 1, 1]
    written = [1.0, 2.0, 3.0, 5.0, 4.0, 1.0, 2.0, 1.0, 2.0]
    stale = [False] * 7 + [True, False]
    keys, rows = counting(key, status, attempts, written, stale)
    assert keys.tolist() == [0, 1, 2, 3]
    assert rows.tolist() == [2, 4, 6, 8]  # done; the earlier done; attempt 2; the current one
    grid = Grid(("digits",), 2, 2)
    assert choose(
        grid,
        np.array(key),
        np.array(status),
        np.array(attempts),
        np.array(written),
        np.array(stale),
    ).tolist() == [2, 4, 6, 8]


def test_the_index_reads_only_what_was_appended_and_sees_a_replaced_pack(study) -> None:
    append_result(study, "digits", 0, 0)
    append_result(study, "digits", 1, 0, task="T0002.test.0")
    first = update_index(study)
    assert len(first) == 2 and study.layout.results_index.exists()
    assert load_index(study.layout).pack_paths == first.pack_paths
    append_result(study, "digits", 2, 0)
    second = update_index(study)
    assert sorted(second.records["arch_id"].tolist()) == [0, 1, 2]
    pack = study.layout.pack("digits", "T0002.test.0")
    pack.unlink()
    append_result(study, "digits", 1, 1, task="T0002.test.0")  # a new file of the same name
    third = update_index(study)
    cells = zip(third.records["arch_id"].tolist(), third.records["seed"].tolist(), strict=True)
    assert sorted(cells) == [
        (0, 0),
        (1, 1),
        (2, 0),
    ]


def test_a_pack_cut_shorter_than_it_was_read_is_read_again_whole(study) -> None:
    for arch_id in range(3):
        append_result(study, "digits", arch_id, 0)
    assert len(update_index(study)) == 3
    pack = study.layout.pack("digits", "T0001.test.0")
    pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    now = standing(study)
    assert now.index.records["arch_id"].tolist() == [0]
    assert int(now.outcomes.finished(2).sum()) == 1


def test_results_of_a_dataset_the_study_no_longer_has_are_left_out(study) -> None:
    append_result(study, "fashion_mnist", 0, 0)
    (study.root / "study.toml").write_text(STUDY.split("[datasets.fashion_mnist]")[0])
    smaller = load_study(study.root)
    now = standing(smaller)
    assert len(now.index) == 0 and len(now.outcomes.grid) == 6


def test_a_requeued_task_appends_to_its_own_pack(study) -> None:
    append_result(study, "digits", 0, 0, "failed", attempts=1, error="Traceback\nOSError: x")
    append_result(study, "digits", 0, 0, "done", attempts=2)
    [pack] = (study.root / "results" / "digits").iterdir()
    assert [s.result.status for s in packs.stored(pack)] == ["failed", "done"]
    now = standing(study)
    row = now.outcomes.row[0]
    assert now.index.records["status"][row] == 0 and now.index.records["attempts"][row] == 2
    assert json.loads(packs.stored(pack)[1].result.spec)["name"] == "digits"
