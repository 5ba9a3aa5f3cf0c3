"""The study folder: where every file of a study lives. The one module that names a path
inside a study folder (and the cell file stem `<arch_id>-s<seed>`); every other module asks
a `StudyLayout` for its paths.

    study.toml  architectures.json  results.h5  report/
    data/<dataset>.*                             ([study] data_dir may put it elsewhere)
    results/<dataset>/<task>.pack                the records (result and log) of the cells
                                                 one array task ran, appended as they end
    results/<dataset>/<arch_id>-s<seed>.h5       one cell's result (studies from before packs)
    checkpoints/<dataset>/<arch_id>-s<seed>.pt   the last epoch-end checkpoint
    logs/<dataset>/<arch_id>-s<seed>.log         a running cell's log (then in its record)
    scores/<dataset>/<first>-<last>.h5           training-free scores of architectures
                                                 first..last (every seed), one file each
    logs/slurm/                                  sbatch arrays' task logs (%A_%a.out)
    jobs/<record>/record.json                    what a launch submitted
    jobs/<record>/<array>.json                   an array's manifest: every task's cells
    jobs/<record>/<array>.sbatch, submit.sh      rendered sbatch scripts
    jobs/<record>/queue|claimed|done/            manifests of local lanes, by their state
    jobs/<record>/slurm|local/                   submitit's folders (pickles, task logs)
    jobs/Z<number>/                              a score run: its tasks (queue|claimed|done
                                                 locally, <dataset>/<task>.json on Slurm),
                                                 submitit's folders; no record.json
    jobs/reset|stale/<stamp>/<dataset>.pack      records set aside (--reset-retries,
                                                 --retrain-stale), kept for reading
    jobs/prepare/  jobs/*.lock  jobs/results-index.npz
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
PACK_SUFFIX = ".pack"
H5_SUFFIX = ".h5"  # score files, and one cell's result file of studies from before packs
LEGACY_SUFFIX = H5_SUFFIX


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
    legacy_result: Path  # results/<dataset>/<arch_id>-s<seed>.h5, from before packs
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

    def pack(self, dataset: str, task: str) -> Path:
        """The pack a task appends its cells' records to."""
        return self.results_dir(dataset) / f"{task}{PACK_SUFFIX}"

    def cell(self, dataset: str, arch_id: int, seed: int) -> CellPaths:
        """Where a cell's checkpoint and running log are (and its result file, in a study from
        before packs)."""
        stem = cell_stem(arch_id, seed)
        return CellPaths(
            legacy_result=self.results_dir(dataset) / f"{stem}{LEGACY_SUFFIX}",
            checkpoint=self.root / "checkpoints" / dataset / f"{stem}.pt",
            log=self.root / "logs" / dataset / f"{stem}.log",
        )

    @property
    def scores(self) -> Path:
        """The training-free scores' files, a folder per dataset."""
        return self.root / "scores"

    def scores_dir(self, dataset: str) -> Path:
        """Where a dataset's score files are."""
        return self.scores / dataset

    def score_file(self, dataset: str, first: int, last: int) -> Path:
        """The score file of architectures first..last of a dataset, every seed."""
        return self.scores_dir(dataset) / f"{first}-{last}{H5_SUFFIX}"

    def score_files(self, dataset: str) -> list[Path]:
        """Every score file of a dataset, in name order."""
        return sorted(self.scores_dir(dataset).glob(f"*{H5_SUFFIX}"))

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def written_folders(self) -> list[Path]:
        """The folders the study's own files are written to (atomically): results,
        checkpoints, logs, jobs. Prepared data is the loaders' business."""
        return [self.root / name for name in ("results", "checkpoints", "logs")] + [self.jobs]

    @property
    def results_index(self) -> Path:
        return self.jobs / "results-index.npz"

    def set_aside(self, why: str, stamp: str, dataset: str) -> Path:
        """Where records set aside (`why`: reset, stale) at `stamp` are kept, per dataset."""
        return self.jobs / why / stamp / f"{dataset}{PACK_SUFFIX}"

    def relative(self, path: Path) -> str:
        """A path inside the study folder as the index keeps it (POSIX, relative)."""
        return Path(path).relative_to(self.root).as_posix()

    def lock_file(self, name: str) -> Path:
        return self.jobs / f"{name}.lock"

    def record_dir(self, record_id: str) -> Path:
        return self.jobs / record_id

    def record_file(self, record_id: str) -> Path:
        return self.record_dir(record_id) / RECORD_FILE

    def record_files(self) -> list[Path]:
        """Every record.json under jobs/, in name order."""
        return sorted(self.jobs.glob(f"*/{RECORD_FILE}"))

    def task_manifests(self) -> list[Path]:
        """Manifests of one task each (launches before one manifest per array, and local
        lanes): jobs/<record>/<array>/<task>.json, jobs/<record>/queue|claimed|done/*.json."""
        return sorted(self.jobs.glob("*/*/*.json"))

    def record_ids(self, kind: str) -> list[str]:
        """Ids of the record folders of one kind (`L0001`, `S0002`, ...) that exist."""
        pattern = f"{kind}[0-9][0-9][0-9][0-9]*"
        return sorted(p.name for p in self.jobs.glob(pattern) if p.is_dir())

    def array_manifest(self, record_id: str, label: str) -> Path:
        """An array's manifest: what `python -m hpc.worker --array FILE --task-id N` reads."""
        return self.record_dir(record_id) / f"{label}.json"

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
        """Where `launch --reset-retries` keeps the cell result files (from before packs) it
        moves away."""
        return self.jobs / "reset" / stamp / dataset


def task_manifest(folder: Path, index: int) -> Path:
    """Task `index`'s manifest in a folder of one manifest per task (launches before
    one manifest per array)."""
    return folder / f"{index}.json"


def result_file(name: str) -> str | None:
    """What a file in a dataset's results folder is: "pack", "legacy" (a one-cell result
    file) or None (a temporary, anything else)."""
    if name.endswith(PACK_SUFFIX):
        return "pack" if pack_task(name) is not None else None
    if name.endswith(LEGACY_SUFFIX):
        return "legacy" if legacy_cell(name) is not None else None
    return None


def pack_task(path: Path | str) -> str | None:
    """The task a pack file (a path or a file name) belongs to (its name without suffix),
    None when not a pack."""
    name = path if isinstance(path, str) else path.name
    if name.startswith(".") or not name.endswith(PACK_SUFFIX):
        return None
    return name[: -len(PACK_SUFFIX)]


def legacy_cell(path: Path | str) -> tuple[int, int] | None:
    """(arch_id, seed) of a one-cell result file (a path or a file name), None when it is
    not one."""
    name = path if isinstance(path, str) else path.name
    if name.startswith(".") or not name.endswith(LEGACY_SUFFIX):
        return None
    return parse_stem(name[: -len(LEGACY_SUFFIX)])


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
