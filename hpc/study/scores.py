"""The study's training-free scores as files: which (architecture, seed) rows of a dataset are
stored, which are missing, the tasks that compute them, and the tables `collect` puts in
results.h5.

A dataset's scores live in score files `scores/<dataset>/<first>-<last>.h5` (the layout's),
one per block of `[scores] architectures_per_file` architecture ids, every seed of the block
in the same file; each is written whole and atomically through analysis.schema and records
its `inputs` (`score_inputs`). A file made from other inputs, or unreadable, counts as
missing: its rows are computed again and the file replaced. Nothing here imports torch; the
worker computes a task (hpc/worker/scores.py), the scheduling room runs the tasks
(hpc/scheduling/scores.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.files import write_json
from analysis.schema import (
    CorruptResultError,
    ScoreTable,
    read_score_file,
    read_score_inputs,
    write_score_file,
)
from hpc.study.population import Population, dataset_arch
from hpc.study.spec import DatasetEntry, Study

Row = tuple[int, int]  # (architecture id, seed)
TASK_KEYS = ("study_dir", "data_dir", "dataset", "inputs", "rows", "archs", "target", "threads")
# What `inputs` says of the minibatch and the initialisation (hpc/worker/scores.py does it).
MINIBATCH = "the first batch of the training loader's epoch 0 with the row's seed"
INIT = "build_model after torch.manual_seed(cell_seed(dataset, arch_id, seed)): the cell's own"


def score_inputs(study: Study, entry: DatasetEntry) -> dict[str, Any]:
    """What a dataset's scores are computed from besides the architecture and the seed, as
    its score files record it (their `inputs`, with the file's `seeds` added): the dataset
    spec whole (DatasetSpec.to_dict()), the recipe keys that shape the training loader's
    minibatch (resolution, augment), the dataset's stem override, the minibatch size."""
    return _canonical(
        {
            "dataset": entry.spec.to_dict(),
            "recipe": {"resolution": entry.recipe.resolution, "augment": entry.recipe.augment},
            "stem": entry.stem,
            "minibatch_size": study.scores.minibatch_size,
            "minibatch": MINIBATCH,
            "init": INIT,
        }
    )


def _canonical(value: Any) -> Any:
    """JSON's view of a value: tuples as lists, keys sorted."""
    return json.loads(json.dumps(value, sort_keys=True))


def same_inputs(recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a file's recorded inputs are the current ones (its seeds aside)."""
    mine = {k: v for k, v in recorded.items() if k != "seeds"}
    return _canonical(mine) == _canonical(current)


@dataclass(frozen=True)
class ScoreFile:
    """One score file as found: its table, or why it does not count ("" when it does)."""

    path: Path
    table: ScoreTable | None
    problem: str


def read_score_files(study: Study, entry: DatasetEntry) -> list[ScoreFile]:
    """Every score file of a dataset, read; an unreadable one or one made from other inputs
    has a problem and no table."""
    current = score_inputs(study, entry)
    found = []
    for path in study.layout.score_files(entry.name):
        try:
            table, inputs = read_score_file(path), read_score_inputs(path)
        except (CorruptResultError, OSError) as exc:
            found.append(ScoreFile(path, None, f"unreadable ({exc})"))
            continue
        if table.dataset != entry.name or not same_inputs(inputs, current):
            found.append(ScoreFile(path, None, "computed from other inputs"))
        else:
            found.append(ScoreFile(path, table, ""))
    return found


def stored_rows(files: Iterable[ScoreFile]) -> set[Row]:
    """The (architecture id, seed) rows the counted files hold."""
    rows: set[Row] = set()
    for found in files:
        if found.table is not None:
            rows.update(zip(found.table.arch_ids.tolist(), found.table.seeds.tolist(), strict=True))
    return rows


def study_rows(study: Study) -> list[Row]:
    """Every (architecture id, seed) row a dataset of the study has scores for."""
    return [(a, s) for a in range(study.settings.architectures) for s in study.seeds]


@dataclass(frozen=True)
class ScoreTask:
    """The missing rows of one block of architectures of one dataset: what one worker
    computes and writes into the block's score file."""

    study_dir: Path
    data_dir: Path
    dataset: str
    inputs: dict[str, Any]  # score_inputs
    rows: tuple[Row, ...]
    archs: dict[int, dict[str, Any]]  # id -> the architecture as it trains on the dataset
    target: Path  # the block's score file
    threads: int = 1  # torch threads

    @property
    def cost(self) -> float:
        """Relative work: rows x pixels of the dataset's images."""
        resolution = self.inputs["recipe"]["resolution"] or self.inputs["dataset"]["resolution"]
        return float(len(self.rows) * resolution**2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_dir": str(self.study_dir),
            "data_dir": str(self.data_dir),
            "dataset": self.dataset,
            "inputs": self.inputs,
            "rows": [list(r) for r in self.rows],
            "archs": {str(k): v for k, v in self.archs.items()},
            "target": str(self.target),
            "threads": self.threads,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreTask:
        missing = [k for k in TASK_KEYS if k not in data]
        if missing:
            raise ValueError(f"a score task needs {', '.join(missing)}; it has {sorted(data)}")
        return cls(
            study_dir=Path(data["study_dir"]),
            data_dir=Path(data["data_dir"]),
            dataset=str(data["dataset"]),
            inputs=dict(data["inputs"]),
            rows=tuple((int(a), int(s)) for a, s in data["rows"]),
            archs={int(k): dict(v) for k, v in data["archs"].items()},
            target=Path(data["target"]),
            threads=int(data["threads"]),
        )


def write_score_task(path: Path, task: ScoreTask) -> None:
    write_json(path, task.to_dict())


def read_score_task(path: Path) -> ScoreTask:
    return ScoreTask.from_dict(json.loads(Path(path).read_text()))


def plan_scores(
    study: Study, population: Population, names: Sequence[str] | None = None
) -> list[ScoreTask]:
    """One task per block of architectures with missing rows, of the named datasets (default
    all), the costliest first."""
    entries = [study.dataset(n) for n in names] if names else list(study.datasets)
    tasks = []
    for entry in entries:
        have = stored_rows(read_score_files(study, entry))
        missing = [r for r in study_rows(study) if r not in have]
        block = study.scores.architectures_per_file
        for first in sorted({a // block * block for a, _ in missing}):
            rows = tuple(r for r in missing if first <= r[0] < first + block)
            ids = sorted({a for a, _ in rows})
            tasks.append(
                ScoreTask(
                    study_dir=study.root,
                    data_dir=study.data_dir,
                    dataset=entry.name,
                    inputs=score_inputs(study, entry),
                    rows=rows,
                    archs={a: dataset_arch(population.archs[a], entry).to_dict() for a in ids},
                    target=study.layout.score_file(entry.name, first, first + block - 1),
                )
            )
    return sorted(tasks, key=lambda t: -t.cost)


def store_scores(task: ScoreTask, table: ScoreTable) -> None:
    """Write a task's table into its block's file, with the rows of other seeds or
    architectures the file already holds from the same inputs; atomically."""
    kept = _readable(task.target, task.inputs)
    if kept is not None:
        new = set(zip(table.arch_ids.tolist(), table.seeds.tolist(), strict=True))
        old = [
            i
            for i, row in enumerate(zip(kept.arch_ids.tolist(), kept.seeds.tolist(), strict=True))
            if row not in new
        ]
        if kept.names == table.names and kept.minibatch_size == table.minibatch_size and old:
            table = _concat(table.dataset, [_rows(kept, old), table])
    seeds = sorted(set(table.seeds.tolist()))
    write_score_file(task.target, _sorted(table), {**task.inputs, "seeds": seeds})


def _readable(path: Path, inputs: dict[str, Any]) -> ScoreTable | None:
    try:
        table = read_score_file(path)
        return table if same_inputs(read_score_inputs(path), inputs) else None
    except (CorruptResultError, OSError):
        return None


def _rows(table: ScoreTable, index: Sequence[int] | np.ndarray) -> ScoreTable:
    index = np.asarray(index, dtype=np.int64)
    return ScoreTable(
        dataset=table.dataset,
        arch_ids=table.arch_ids[index],
        names=table.names,
        values=table.values[index],
        minibatch_size=table.minibatch_size,
        seeds=table.seeds[index],
    )


def _concat(dataset: str, tables: Sequence[ScoreTable]) -> ScoreTable:
    return ScoreTable(
        dataset=dataset,
        arch_ids=np.concatenate([t.arch_ids for t in tables]),
        names=tables[0].names,
        values=np.concatenate([t.values for t in tables]),
        minibatch_size=tables[0].minibatch_size,
        seeds=np.concatenate([t.seeds for t in tables]),
    )


def _sorted(table: ScoreTable) -> ScoreTable:
    """Rows by architecture, then seed."""
    seeds = np.asarray(table.seeds, dtype=np.int64)
    key = np.asarray(table.arch_ids, dtype=np.int64) * (int(seeds.max(initial=0)) + 1) + seeds
    return _rows(table, np.argsort(key, kind="stable"))


def score_tables(study: Study) -> list[ScoreTable]:
    """Per dataset of the study with stored scores, one table: its counted files' rows of the
    study's architectures and seeds, merged (what collect writes into results.h5)."""
    tables = []
    for entry in study.datasets:
        found = [f.table for f in read_score_files(study, entry) if f.table is not None]
        # One table has one set of score names and one minibatch size: the first file's.
        same = [t for t in found if _shape(t) == _shape(found[0])]
        if not same:
            continue
        merged = _concat(entry.name, same)
        wanted = set(study_rows(study))
        keep: dict[Row, int] = {}
        for i, row in enumerate(zip(merged.arch_ids.tolist(), merged.seeds.tolist(), strict=True)):
            if row in wanted:
                keep.setdefault(row, i)
        if keep:
            tables.append(_sorted(_rows(merged, list(keep.values()))))
    return tables


def _shape(table: ScoreTable) -> tuple[tuple[str, ...], int]:
    return table.names, table.minibatch_size


def files_stamp(study: Study) -> str:
    """Changes when any score file of the study changes (collect's fingerprint takes it)."""
    digest = hashlib.sha256()
    for entry in study.datasets:
        for path in study.layout.score_files(entry.name):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}:{stat.st_ino}".encode())
    return digest.hexdigest()
