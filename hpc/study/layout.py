"""The study folder: where every file of a study lives. The one module that names a path
inside a study folder (and the cell file stem `<arch_id>-s<seed>`); every other module asks
a `StudyLayout` for its paths.

    study.toml  architectures.json  results.h5  report/
    data/<dataset>.*                             ([study] data_dir may put it elsewhere)
    results/<dataset>/<arch_id>-s<seed>.h5       one file per finished cell
    checkpoints/<dataset>/<arch_id>-s<seed>.pt   the last epoch-end checkpoint
    logs/<dataset>/<arch_id>-s<seed>.log         the cell's own log
    logs/slurm/                                  sbatch arrays' task logs (%A_%a.out)
    jobs/<record>/record.json                    what a launch submitted
    jobs/<record>/<array>/<task>.json            manifests of arrays (sbatch, Slurm)
    jobs/<record>/<array>.sbatch, submit.sh      rendered sbatch scripts
    jobs/<record>/queue|claimed|done/            manifests of local lanes, by their state
    jobs/<record>/slurm|local/                   submitit's folders (pickles, task logs)
    jobs/prepare/  jobs/reset/  jobs/*.lock  jobs/results-index.json
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STUDY_FILE = "study.toml"
DATA_DIR = "data"  # the default of [study] data_dir
RECORD_FILE = "record.json"


def cell_stem(arch_id: int, seed: int) -> str:
    """A cell's file name without suffix, and its key within a dataset: `3-s0`."""
    return f"{arch_id}-s{seed}"


def parse_stem(stem: str) -> tuple[int, int] | None:
    """(arch_id, seed) of a `cell_stem`, or None when `stem` is not one."""
    arch, sep, seed = stem.partition("-s")
    if not sep or not arch.isdigit() or not seed.isdigit():
        return None
    return int(arch), int(seed)


@dataclass(frozen=True)
class CellPaths:
    result: Path  # results/<dataset>/<arch_id>-s<seed>.h5
    checkpoint: Path  # checkpoints/<dataset>/<arch_id>-s<seed>.pt
    log: Path  # logs/<dataset>/<arch_id>-s<seed>.log


@dataclass(frozen=True)
class LaneDirs:
    """A local launch's manifests by state (the local scheduler's protocol moves them)."""

    queue: Path
    claimed: Path
    done: Path


@dataclass(frozen=True)
class StudyLayout:
    """The paths of one study folder; `data_dir` holds its prepared datasets."""

    root: Path
    data_dir: Path

    @classmethod
    def at(cls, root: Path | str, data_dir: Path | str = DATA_DIR) -> StudyLayout:
        """The layout of the study in `root`; a relative `data_dir` is inside it."""
        root = Path(root)
        return cls(root, root / data_dir)

    @property
    def study_file(self) -> Path:
        return self.root / STUDY_FILE

    @property
    def architectures(self) -> Path:
        return self.root / "architectures.json"

    @property
    def results_file(self) -> Path:
        return self.root / "results.h5"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def results_dir(self, dataset: str) -> Path:
        """Where a dataset's cell result files are."""
        return self.root / "results" / dataset

    def cell(self, dataset: str, arch_id: int, seed: int) -> CellPaths:
        """Where a cell's result, checkpoint and log are."""
        stem = cell_stem(arch_id, seed)
        return CellPaths(
            result=self.results_dir(dataset) / f"{stem}.h5",
            checkpoint=self.root / "checkpoints" / dataset / f"{stem}.pt",
            log=self.root / "logs" / dataset / f"{stem}.log",
        )

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def written_folders(self) -> list[Path]:
        """The folders the study's own files are written to (atomically): results,
        checkpoints, jobs. Prepared data is the loaders' business."""
        return [self.root / "results", self.root / "checkpoints", self.jobs]

    @property
    def results_index(self) -> Path:
        return self.jobs / "results-index.json"

    def lock_file(self, name: str) -> Path:
        return self.jobs / f"{name}.lock"

    def record_dir(self, record_id: str) -> Path:
        return self.jobs / record_id

    def record_file(self, record_id: str) -> Path:
        return self.record_dir(record_id) / RECORD_FILE

    def record_files(self) -> list[Path]:
        """Every record.json under jobs/, in name order."""
        return sorted(self.jobs.glob(f"*/{RECORD_FILE}"))

    def record_ids(self, kind: str) -> list[str]:
        """Ids of the record folders of one kind (`L0001`, `S0002`, ...) that exist."""
        pattern = f"{kind}[0-9][0-9][0-9][0-9]*"
        return sorted(p.name for p in self.jobs.glob(pattern) if p.is_dir())

    def array_manifest(self, record_id: str, label: str, index: int) -> Path:
        """A task's manifest: what `python -m hpc.worker --array DIR --task-id N` reads."""
        return task_manifest(self.array_manifests(record_id, label), index)

    def array_manifests(self, record_id: str, label: str) -> Path:
        return self.record_dir(record_id) / label

    def sbatch_script(self, record_id: str, label: str) -> Path:
        return self.record_dir(record_id) / f"{label}.sbatch"

    def submit_script(self, record_id: str) -> Path:
        return self.record_dir(record_id) / "submit.sh"

    def sbatch_logs(self) -> Path:
        """Where rendered sbatch arrays write their task logs."""
        return self.root / "logs" / "slurm"

    def lanes(self, record_id: str) -> LaneDirs:
        folder = self.record_dir(record_id)
        return LaneDirs(folder / "queue", folder / "claimed", folder / "done")

    def submitit_dir(self, record_id: str, scheduler: str) -> Path:
        """submitit's folder of a launch: its pickles and its task logs."""
        return self.record_dir(record_id) / scheduler

    @property
    def prepare_jobs(self) -> Path:
        """submitit's folder of `anysweep prepare --cluster slurm`."""
        return self.jobs / "prepare"

    def reset_dir(self, stamp: str, dataset: str) -> Path:
        """Where `launch --reset-retries` keeps the result files it moves away."""
        return self.jobs / "reset" / stamp / dataset


def task_manifest(folder: Path, index: int) -> Path:
    """The manifest of an array's task `index` in the array's manifest folder."""
    return folder / f"{index}.json"


def cell_paths(study_dir: Path | str, dataset: str, arch_id: int, seed: int) -> CellPaths:
    """Where a cell's files are in the study folder `study_dir`."""
    return StudyLayout.at(study_dir).cell(dataset, arch_id, seed)


@contextlib.contextmanager
def study_lock(layout: StudyLayout, name: str) -> Iterator[None]:
    """An exclusive fcntl lock on jobs/<name>.lock, held while the block runs."""
    path = layout.lock_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
