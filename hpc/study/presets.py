"""Presets: commented study.toml files to start a study from (`anysweep init --preset`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from hpc.study.layout import StudyLayout

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def init_study(study_dir: Path | str, preset: str = "demo", force: bool = False) -> Path:
    """Write DIR/study.toml from a preset; returns its path."""
    source = PRESETS_DIR / f"{preset}.toml"
    if not source.is_file():
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(preset_names())}")
    target = StudyLayout.at(study_dir).study_file
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
