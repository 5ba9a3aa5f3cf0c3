"""What a SIGKILL in the middle of a write leaves behind (a hidden `.NAME.*.tmp` beside the
file) never accumulates: a cell's next checkpoint save removes its own, `anysweep clean`
removes any that no write has touched for an hour."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from hpc.study.clean import clean
from hpc.study.layout import cell_paths
from hpc.study.spec import load_study
from hpc.worker.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
# A process that starts a checkpoint save and is killed (SIGKILL) half-way through it.
KILLED_IN_SAVE = """
import os, signal, sys, torch
from hpc.worker.checkpoint import save_checkpoint

class KilledWhilePickled:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)

save_checkpoint(sys.argv[1], {"epoch": 1, "weights": torch.ones(1000), "x": KilledWhilePickled()})
"""


def _killed_in_save(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILLED_IN_SAVE, str(path)], env=env)
    assert done.returncode == -9


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_the_next_save_removes_what_a_killed_save_left(tmp_path):
    path = tmp_path / "checkpoints" / "digits" / "0-s0.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.zeros(3)})
    for _ in range(3):
        _killed_in_save(path)
    leftovers = _hidden(path.parent)  # each save removed the one before: none accumulate
    assert len(leftovers) == 1 and leftovers[0].startswith(".0-s0.pt.")
    assert load_checkpoint(path)["epoch"] == 1  # the kills never touched the checkpoint
    save_checkpoint(path, {"epoch": 2, "weights": torch.ones(3)})
    assert _hidden(path.parent) == [] and load_checkpoint(path)["epoch"] == 2


STUDY = """\
[study]
architectures = 2

[datasets.digits]
"""


def test_clean_removes_temporaries_no_write_has_touched_for_an_hour(tmp_path):
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path)
    paths = cell_paths(tmp_path, "digits", 0, 0)
    _killed_in_save(paths.checkpoint)
    old_result = paths.legacy_result.parent / ".0-s0.h5.k2j4.tmp"
    old_record = tmp_path / "jobs" / "L0001" / ".record.json.x7.tmp"
    fresh = paths.checkpoint.parent / ".1-s0.pt.a1b2.tmp"  # a save in flight
    for path in (old_result, old_record, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    hour_ago = time.time() - 3700
    for path in (*paths.checkpoint.parent.glob(".0-s0.pt.*"), old_result, old_record):
        os.utime(path, (hour_ago, hour_ago))
    removed, _ = clean(study)
    assert len(removed) == 3
    assert _hidden(paths.checkpoint.parent) == [fresh.name]
    assert _hidden(paths.legacy_result.parent) == [] and _hidden(old_record.parent) == []
