"""The fault-injection benchmark's short configuration: faults on the local cluster lose,
duplicate and change no cell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[2]


def test_chaos_short_loses_duplicates_and_changes_no_cell(slurm_cluster, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.chaos", "--short", "--work", str(tmp_path / "w")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cells lost 0, duplicated 0, changed 0;" in done.stdout
    injected = [line for line in done.stdout.splitlines() if line.startswith("  fault ")]
    assert len(injected) >= 3
