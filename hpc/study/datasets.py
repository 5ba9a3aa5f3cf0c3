"""The study's datasets: preparing them (here, or one Slurm job each), what is prepared, their
facts from the registry when nothing is prepared yet, and what results.h5 records of each.

A subset reads its parent's prepared files (`DatasetEntry.prepared_spec`); the prepared
folder is `[study] data_dir`, and what is inside it belongs to `loaders.prepare`.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.schema import DatasetInfo
from hpc.study.spec import DatasetEntry, Study

ASSUMED_TRAIN_IMAGES = 10_000  # a dataset whose size the registry does not know
ASSUMED_TEST_IMAGES = 2_000
ASSUMED_CLASSES = 10


def prepare_datasets(
    study: Study, names: Sequence[str] | None = None, *, progress: bool = True
) -> list[Any]:
    """Build every dataset of the study (or those named); idempotent. A subset is prepared
    through its parent's files. Every source is checked (`check_sources`) before the first
    is prepared."""
    from loaders.prepare import prepare

    entries = [study.dataset(n) for n in names] if names else list(study.datasets)
    check_sources(study, [e.name for e in entries])
    return [prepare(entry.spec, study.data_dir, progress=progress) for entry in entries]


def check_sources(study: Study, names: Sequence[str] | None = None) -> None:
    """Check the named datasets' sources (default: all) as far as can be done without
    opening an image (`loaders.sources.check_source`: paths, a folder's classes counted by
    file names, a subset's k or a control's n against them); every problem in one
    DatasetError (a ValueError), before anything is prepared or trained."""
    from loaders.registry import DatasetError

    problems = source_problems(study, names)
    if problems:
        raise DatasetError("; ".join(problems))


def source_problems(study: Study, names: Sequence[str] | None = None) -> list[str]:
    """What `check_sources` finds wrong, one line per problem."""
    from loaders.registry import DatasetError, check_control_size

    problems: list[str] = []
    for entry in [study.dataset(n) for n in names] if names else study.datasets:
        spec = entry.spec
        try:
            counted = _source_counts(entry.prepared_spec)
            if counted is None:
                continue
            train, _, classes = counted
            if spec.is_subset and spec.k is not None and spec.k > classes:
                raise DatasetError(
                    f"dataset {spec.name!r}: k={spec.k} is more than the {classes} classes "
                    f"of {spec.parent!r}"
                )
            if spec.is_control:
                check_control_size(spec.name, spec.parent, spec.n, classes, train)
        except DatasetError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    if len(problems) > 1:  # one layout sentence per problem would drown the line
        short = [p.split("; expected ")[0] for p in problems]
        if short != problems:
            problems = [*short, "`anysweep prepare DIR --dataset NAME` says what each expects"]
    return problems


@functools.lru_cache(maxsize=64)
def _source_counts(spec: Any) -> tuple[int, int, int] | None:
    """`check_source` of the files a dataset reads, once per process (a folder is listed)."""
    from loaders.sources import check_source

    return check_source(spec)


def files_owners(study: Study, names: Sequence[str] | None = None) -> list[DatasetEntry]:
    """The datasets whose prepared files the named ones (default: all) read, each once: a
    subset's parent stands for it."""
    entries = [study.dataset(n) for n in names] if names else list(study.datasets)
    owners: dict[str, DatasetEntry] = {}
    for entry in entries:
        owners.setdefault(entry.prepared_spec.name, entry)
    return list(owners.values())


def prepare_one(spec_dict: dict[str, Any], data_dir: str) -> str:
    """The cluster job of `anysweep prepare --cluster slurm`: prepare one dataset."""
    from loaders.prepare import prepare
    from loaders.registry import DatasetSpec

    spec = DatasetSpec.from_dict(spec_dict)
    prepare(spec, Path(data_dir), progress=True)
    return spec.name


def unprepared(study: Study, names: Sequence[str]) -> list[str]:
    """Which of the named datasets have no prepared files yet."""
    from loaders.prepare import open_prepared

    missing = []
    for name in names:
        try:
            open_prepared(study.dataset(name).spec, study.data_dir)
        except (FileNotFoundError, ValueError):
            missing.append(name)
    return missing


def prepared_manifest(study: Study, entry: DatasetEntry) -> Path:
    """The manifest `loaders.prepare` writes for the files a dataset reads."""
    from loaders.prepare import manifest_path

    return manifest_path(entry.prepared_spec, study.data_dir)


def dataset_sizes(entry: DatasetEntry) -> tuple[int, int, int, bool]:
    """(train images, test images, classes, assumed?) without reading an image: the
    registry's facts (`loaders.registry.expected_sizes`), or a folder's images counted by
    file names; what neither knows is assumed (caps still apply)."""
    from loaders.registry import DatasetError, expected_sizes

    spec = entry.spec
    train, test, classes = expected_sizes(spec)
    if (train is None or test is None) and entry.prepared_spec.source == "folder":
        with contextlib.suppress(DatasetError):  # a missing folder: check_sources says so
            known = _source_counts(entry.prepared_spec)
            train, test, classes = expected_sizes(spec, known)
    assumed = train is None or test is None
    if train is None:
        train = min(ASSUMED_TRAIN_IMAGES, spec.max_train or ASSUMED_TRAIN_IMAGES)
    if test is None:
        test = min(ASSUMED_TEST_IMAGES, spec.max_test or ASSUMED_TEST_IMAGES)
    return train, test, classes or ASSUMED_CLASSES, assumed


def planned_backend(entry: DatasetEntry) -> str:
    """The backend `prepare` gives the files a dataset reads, from the registry's facts alone
    (three channels assumed, the most a training image has)."""
    from loaders.prepare import choose_backend
    from loaders.registry import REGISTRY

    spec = entry.prepared_spec
    info = REGISTRY.get(spec.name)
    train = info.num_train if info is not None and info.num_train else ASSUMED_TRAIN_IMAGES
    if spec.max_train:
        train = min(train, spec.max_train)
    return str(choose_backend(spec, train, 3))


def results_info(study: Study, entry: DatasetEntry) -> DatasetInfo:
    """What results.h5 records of a dataset (its kind, parent and training images among it):
    from its prepared files when they are there, else from the registry."""
    from loaders.prepare import open_prepared

    spec = entry.spec
    try:
        prepared = open_prepared(spec, study.data_dir)
        classes, names = prepared.num_classes, tuple(prepared.class_names)
        num_train, num_test = prepared.num_train, prepared.num_test
        subset = tuple(prepared.selection.classes) if prepared.selection is not None else ()
    except (FileNotFoundError, ValueError):
        num_train, num_test, classes, _ = dataset_sizes(entry)
        names, subset = tuple(spec.label_names or ()), ()
    return DatasetInfo(
        name=entry.name,
        classes=classes,
        resolution=entry.resolution,
        num_train=num_train,
        num_test=num_test,
        source=spec.source,
        class_names=names,
        recipe=entry.recipe.to_json(),
        parent=spec.parent or "",
        subset_classes=subset,
        spec=json.dumps(spec.to_dict(), sort_keys=True),
        kind=dataset_kind(spec),
    )


def dataset_kind(spec: Any) -> str:
    """What results.h5 calls a dataset (analysis.schema.KINDS): a control (n of its parent's
    training images, every class), a subset (k of its parent's classes), or a dataset."""
    if spec.is_control:
        return "control"
    return "subset" if spec.is_subset else "dataset"


def prepared_files(study: Study, unfinished: set[str]) -> list[Path]:
    """Prepared files no unfinished cell reads: a parent's serve its subsets too."""
    from loaders.files import sidecar

    users: dict[str, list[DatasetEntry]] = {}
    for entry in study.datasets:
        users.setdefault(entry.prepared_spec.name, []).append(entry)
    files: list[Path] = []
    for group in users.values():
        if any(u.name in unfinished for u in group):
            continue
        manifest = prepared_manifest(study, group[0])
        try:
            listed = json.loads(manifest.read_text()).get("files", {})
        except (OSError, ValueError):
            continue
        for name in listed.values():
            data = study.data_dir / name
            files.extend(p for p in (data, sidecar(data)) if p.exists())
        files.append(manifest)
    return files
