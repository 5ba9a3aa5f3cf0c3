"""Arguments that several verbs share."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_study_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "study_dir", type=Path, metavar="DIR", help="the study folder (holds study.toml)"
    )


def add_poll(parser: argparse.ArgumentParser) -> None:
    """--poll, for the verbs that wait on their jobs (run, demo)."""
    parser.add_argument(
        "--poll",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="seconds between two looks at the jobs (default: 1 local, 15 slurm)",
    )


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value
