"""Manifests: the study folder, the dataset, the recipe and the cells array tasks run. One
manifest per array holds every task's cells (each architecture once); a local lane's chunk,
and launches before array manifests, have one manifest per task.

The one module that writes and reads manifests (the format is in docs/architecture.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.files import write_json, write_text
from anynet.arch import Architecture
from hpc.study.layout import StudyLayout
from hpc.study.recipe import Recipe
from hpc.study.spec import DEVICES

MANIFEST_KEYS = (
    "study_dir",
    "dataset",
    "recipe",
    "cells",
    "max_attempts",
    "device",
    "threads",
    "data_dir",
    "cohort",
    "cuda_graphs",
    "task",
)
# Manifests written before data_dir was a key read their data from <study_dir>/data;
# those written before cohorts train every cell alone, and eagerly; those without a task
# name their pack after the manifest's path.
OPTIONAL_KEYS = {"data_dir": None, "cohort": 1, "cuda_graphs": False, "task": None}
CELL_KEYS = ("arch_id", "seed", "arch", "attempts")
OPTIONAL_CELL_KEYS = {"attempts": 0}  # attempts made before the launch (failed records)
# An array's manifest: the common keys, each architecture once, and every task's cells as
# [arch_id, seed, attempts] rows.
ARRAY_KEYS = tuple(k for k in MANIFEST_KEYS if k not in ("cells", "task")) + ("archs", "tasks")
# A manifest may name one GPU of several, beside study.toml's devices.
MANIFEST_DEVICES = (*DEVICES, "cuda:N")


@dataclass(frozen=True)
class ManifestCell:
    """One cell as a manifest lists it: with the architecture it trains. `arch` stays a plain
    dict until the cell runs, so one unreadable architecture fails its own cell and not the
    whole chunk."""

    arch_id: int
    seed: int
    arch: dict[str, Any]
    attempts: int = 0  # failed attempts recorded before the launch


@dataclass(frozen=True)
class Manifest:
    study_dir: Path
    dataset: dict[str, Any]  # loaders' DatasetSpec.to_dict()
    recipe: Recipe
    cells: tuple[ManifestCell, ...]
    max_attempts: int
    device: str
    threads: int
    data_dir: Path  # prepared datasets: [study] data_dir, resolved
    cohort: int = 1
    cuda_graphs: bool = False  # speed only: cohort members step as CUDA graphs on CUDA
    task: str = ""  # names the pack its cells' records go to ("": after the manifest's path)

    @property
    def dataset_name(self) -> str:
        return str(self.dataset["name"])


def _check_device(device: str, where: str) -> str:
    if device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ValueError(f"{where}: device {device!r} is not one of {', '.join(MANIFEST_DEVICES)}")


def _check_int(value: Any, name: str, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_bool(value: Any, name: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {name} must be true or false, got {value!r}")
    return value


def _cell(raw: Any, where: str) -> ManifestCell:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a cell must be a mapping with keys {CELL_KEYS}, got {raw!r}")
    unknown = sorted(set(raw) - set(CELL_KEYS))
    missing = [k for k in CELL_KEYS if k not in raw and k not in OPTIONAL_CELL_KEYS]
    if unknown or missing:
        raise ValueError(
            f"{where}: unknown keys {unknown}, missing keys {missing}; valid: {CELL_KEYS}"
        )
    if not isinstance(raw["arch"], Mapping):
        raise ValueError(
            f"{where}: arch must be a mapping (Architecture.to_dict()), got {raw['arch']!r}"
        )
    return ManifestCell(
        arch_id=_check_int(raw["arch_id"], "arch_id", where, 0),
        seed=_check_int(raw["seed"], "seed", where, 0),
        arch=dict(raw["arch"]),
        attempts=_check_int(raw.get("attempts", 0), "attempts", where, 0),
    )


def parse_manifest(data: Any, where: str = "manifest") -> Manifest:
    """Validate a manifest's JSON content; every problem names the key and the valid choices."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a JSON object with keys {MANIFEST_KEYS}")
    unknown = sorted(set(data) - set(MANIFEST_KEYS))
    missing = [k for k in MANIFEST_KEYS if k not in data and k not in OPTIONAL_KEYS]
    if unknown or missing:
        raise ValueError(
            f"{where}: unknown keys {unknown}, missing keys {missing}; valid keys: {', '.join(MANIFEST_KEYS)}"
        )
    dataset = data["dataset"]
    if not isinstance(dataset, Mapping) or not isinstance(dataset.get("name"), str):
        raise ValueError(
            f"{where}: dataset must be a DatasetSpec dict with a 'name', got {dataset!r}"
        )
    if not isinstance(data["recipe"], Mapping):
        raise ValueError(f"{where}: recipe must be a mapping of Recipe fields")
    if not isinstance(data["cells"], list):
        raise ValueError(f"{where}: cells must be a list")
    cells = tuple(_cell(raw, f"{where}: cells[{i}]") for i, raw in enumerate(data["cells"]))
    keys = [(c.arch_id, c.seed) for c in cells]
    if len(set(keys)) != len(keys):
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{where}: cells (arch_id, seed) appear twice: {duplicates}")
    if not isinstance(data["study_dir"], str) or not os.path.isabs(data["study_dir"]):
        raise ValueError(f"{where}: study_dir must be an absolute path, got {data['study_dir']!r}")
    data_dir = data.get("data_dir", str(StudyLayout.at(data["study_dir"]).data_dir))
    if not isinstance(data_dir, str) or not os.path.isabs(data_dir):
        raise ValueError(f"{where}: data_dir must be an absolute path, got {data_dir!r}")
    if not isinstance(data["device"], str):
        raise ValueError(f"{where}: device must be one of {', '.join(MANIFEST_DEVICES)}")
    return Manifest(
        study_dir=Path(data["study_dir"]),
        dataset=dict(dataset),
        recipe=Recipe.from_dict(dict(data["recipe"]), where=f"{where}: recipe"),
        cells=cells,
        max_attempts=_check_int(data["max_attempts"], "max_attempts", where, 1),
        device=_check_device(data["device"], where),
        threads=_check_int(data["threads"], "threads", where, 0),
        data_dir=Path(data_dir),
        cohort=_check_int(data.get("cohort", 1), "cohort", where, 1),
        cuda_graphs=_check_bool(data.get("cuda_graphs", False), "cuda_graphs", where),
        task=_check_task(data.get("task"), where),
    )


def _check_task(task: Any, where: str) -> str:
    if task is None:
        return ""
    if not isinstance(task, str) or not task or "/" in task or task.startswith("."):
        raise ValueError(f"{where}: task must be a file name (no '/', not hidden), got {task!r}")
    return task


def task_of_array(data: Mapping[str, Any], index: int, where: str) -> dict[str, Any]:
    """Task `index` of an array's manifest, as a one-task manifest's content."""
    unknown = sorted(set(data) - set(ARRAY_KEYS))
    missing = [k for k in ARRAY_KEYS if k not in data and k not in OPTIONAL_KEYS]
    if unknown or missing:
        raise ValueError(
            f"{where}: unknown keys {unknown}, missing keys {missing}; valid keys: {', '.join(ARRAY_KEYS)}"
        )
    tasks, archs = data["tasks"], data["archs"]
    if not isinstance(tasks, list) or not isinstance(archs, Mapping):
        raise ValueError(f"{where}: tasks must be a list and archs a mapping of id to architecture")
    if not 0 <= index < len(tasks):
        raise ValueError(f"{where}: no task {index}; the array has tasks 0..{len(tasks) - 1}")
    task = tasks[index]
    try:
        cells = [
            {"arch_id": a, "seed": s, "attempts": n, "arch": archs[str(a)]}
            for a, s, n in task["cells"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{where}: task {index}'s cells must be [arch_id, seed, attempts] rows of "
            f"architectures the manifest lists ({exc!r})"
        ) from None
    one = {k: v for k, v in data.items() if k not in ("archs", "tasks")}
    return {**one, "cells": cells, "task": task.get("task")}


def read_manifest(path: Path, task: int | None = None) -> Manifest:
    """A one-task manifest, or with `task` that task of an array's manifest."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest {path} does not exist") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    is_array = isinstance(data, Mapping) and "tasks" in data
    if is_array != (task is not None):
        what = "an array's manifest: give a task id" if is_array else "one task's manifest"
        raise ValueError(f"{path} is {what}")
    if task is not None:
        data = task_of_array(data, task, str(path))
    return parse_manifest(data, where=str(path) if task is None else f"{path} task {task}")


def write_manifest(
    path: Path,
    *,
    study_dir: Path,
    dataset: Any,
    recipe: Recipe,
    cells: Iterable[tuple[int, int, Architecture]],
    max_attempts: int = 3,
    device: str = "auto",
    threads: int = 1,
    data_dir: Path | None = None,
    cohort: int = 1,
    cuda_graphs: bool = False,
    task: str | None = None,
    attempts: Mapping[tuple[int, int], int] | None = None,
) -> Manifest:
    """Validate and write one chunk's manifest atomically; returns what a worker will read.

    `dataset` is a loaders DatasetSpec (or its `to_dict()`); `cells` are (arch_id, seed,
    architecture) triples of one dataset; `threads` 0 leaves torch's default; `data_dir`
    None means `<study_dir>/data`; `task` names the pack the cells' records go to;
    `attempts` the failed attempts of cells recorded before.
    """
    made = attempts or {}
    rows = []
    for arch_id, seed, arch in cells:
        row = {"arch_id": arch_id, "seed": seed, "arch": _arch_dict(arch, arch_id, seed)}
        if made.get((arch_id, seed)):
            row["attempts"] = made[(arch_id, seed)]
        rows.append(row)
    data = _common(
        study_dir, data_dir, dataset, recipe, max_attempts, device, threads, cohort, cuda_graphs
    )
    data["cells"] = rows
    if task is not None:
        data["task"] = task
    manifest = parse_manifest(json.loads(json.dumps(data)), where=str(path))
    write_json(Path(path), data)
    return manifest


def _arch_dict(arch: Any, arch_id: int, seed: int) -> dict[str, Any]:
    if not isinstance(arch, Architecture):
        raise ValueError(
            f"cell ({arch_id}, {seed}): expected an Architecture, got {type(arch).__name__}"
        )
    return arch.to_dict()


def _common(
    study_dir: Path,
    data_dir: Path | None,
    dataset: Any,
    recipe: Recipe,
    max_attempts: int,
    device: str,
    threads: int,
    cohort: int,
    cuda_graphs: bool,
) -> dict[str, Any]:
    """The keys every task of a chunk or an array shares."""
    data_dir = data_dir if data_dir is not None else StudyLayout.at(study_dir).data_dir
    return {
        "study_dir": str(Path(study_dir).resolve()),
        "data_dir": str(Path(data_dir).resolve()),
        "dataset": dataset.to_dict() if hasattr(dataset, "to_dict") else dict(dataset),
        "recipe": recipe.to_dict(),
        "max_attempts": max_attempts,
        "device": device,
        "threads": threads,
        "cohort": cohort,
        "cuda_graphs": cuda_graphs,
    }


@dataclass(frozen=True)
class ArrayTask:
    """One task of an array's manifest: the pack it names and its cells (arch_id, seed,
    attempts made before)."""

    task: str
    cells: Sequence[tuple[int, int, int]]


def write_array_manifest(
    path: Path,
    *,
    study_dir: Path,
    dataset: Any,
    recipe: Recipe,
    archs: Mapping[int, Architecture],
    tasks: Sequence[ArrayTask],
    max_attempts: int = 3,
    device: str = "auto",
    threads: int = 1,
    data_dir: Path | None = None,
    cohort: int = 1,
    cuda_graphs: bool = False,
) -> None:
    """Write one array's manifest atomically: the keys its tasks share, each architecture
    the tasks train once, and every task's cells. Checked like a one-task manifest (its
    first task), so that a worker never meets a manifest it cannot read."""
    data = _common(
        study_dir, data_dir, dataset, recipe, max_attempts, device, threads, cohort, cuda_graphs
    )
    data["archs"] = {str(a): _arch_dict(arch, a, 0) for a, arch in sorted(archs.items())}
    data["tasks"] = [
        {"task": t.task, "cells": [[int(a), int(s), int(n)] for a, s, n in t.cells]} for t in tasks
    ]
    text = json.dumps(data)
    parsed = json.loads(text)
    for index in {0, len(tasks) - 1}:
        parse_manifest(task_of_array(parsed, index, str(path)), where=f"{path} task {index}")
    write_text(Path(path), text)
