"""results.h5 as a tidy pandas table: one row per cell, the architecture's parameters and
complexity as columns, with a small query API and CSV/Parquet export."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import schema

DEFAULT_REFERENCE = "imagenet"
METRICS = ("top1_err", "top5_err", "best_top1_err")
_INT_COLUMNS = tuple(f.name for f in fields(schema.CellResult) if f.type == "int")
_STAGE_NAMES = {
    "depths": "depth",
    "widths": "width",
    "bottleneck_ratios": "bottleneck_ratio",
    "group_widths": "group_width",
    "sampled_widths": "sampled_width",
    "sampled_group_widths": "sampled_group_width",
}


def results_path(path: str | Path) -> Path:
    """The results.h5 a study folder or a file path names; a clear error when there is none."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "results.h5"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"{path} is a folder without results.h5; run 'anysweep collect' in the study "
                "first, or pass the path of a results.h5 file"
            )
        return candidate
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; expected a study folder or a results.h5 file"
        )
    return path


def architecture_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per architecture (indexed by id): per-stage values as numbered columns,
    derived traits, and complexity at 224 px."""
    stages = int(np.max(columns["num_stages"], initial=0))
    num = np.asarray(columns["num_stages"], dtype=np.int64)
    live = np.arange(max(stages, 1))[None, :] < num[:, None]
    out: dict[str, Any] = {
        "arch_name": columns["name"],
        "num_stages": num,
        "stem": columns["stem"],
        "stem_width": columns["stem_width"],
        "se_ratio": columns["se_ratio"],
    }
    for key, label in _STAGE_NAMES.items():
        values = np.asarray(columns[key])
        for stage in range(stages):
            out[f"{label}_{stage + 1}"] = values[:, stage]
    depths = np.asarray(columns["depths"], dtype=float)[:, :stages]
    widths = np.asarray(columns["widths"], dtype=float)[:, :stages]
    live = live[:, :stages]
    count = np.maximum(num, 1)
    out["total_depth"] = np.where(live, depths, 0).sum(axis=1).astype(np.int64)
    out["cumulative_width"] = np.where(live, widths, 0).sum(axis=1).astype(np.int64)
    ratios = np.asarray(columns["bottleneck_ratios"], dtype=float)[:, :stages]
    groups = np.asarray(columns["group_widths"], dtype=float)[:, :stages]
    out["mean_bottleneck_ratio"] = np.where(live, ratios, 0).sum(axis=1) / count
    out["mean_group_width"] = np.where(live, groups, 0).sum(axis=1) / count
    out["flops_224"] = columns["flops"]
    out["params_224"] = columns["params"]
    out["acts_224"] = columns["acts"]
    frame = pd.DataFrame(
        out, index=pd.Index(np.asarray(columns["id"], dtype=np.int64), name="arch_id")
    )
    return frame


def _choices(name: str, wanted: Any, valid: Iterable[Any]) -> list[Any]:
    values = [wanted] if isinstance(wanted, (str, int, np.integer)) else list(wanted)
    valid = list(valid)
    unknown = [v for v in values if v not in valid]
    if unknown:
        shown = valid if len(valid) <= 30 else [*valid[:30], "..."]
        raise ValueError(f"unknown {name} {unknown}; valid: {shown}")
    return values


class StudyResults:
    """A study's results as tables. `cells` is the tidy frame; the rest are views of it."""

    def __init__(self, results: schema.Results, path: Path | None = None) -> None:
        self.path = path
        self.attrs: dict[str, Any] = dict(results.attrs)
        self.datasets: dict[str, schema.DatasetInfo] = {
            name: table.info for name, table in results.datasets.items()
        }
        self.architectures = architecture_frame(results.architectures)
        self._curves = {name: table.curves for name, table in results.datasets.items()}
        # Training-free scores of the datasets that have them (analysis/zerocost.py).
        self.score_tables: dict[str, schema.ScoreTable] = dict(results.scores)
        self.cells = self._cells(results)
        self._by_seed: dict[str, np.ndarray] = {}  # metric -> architecture x dataset x seed

    def _cells(self, results: schema.Results) -> pd.DataFrame:
        tables = list(results.datasets.values())
        sizes = [len(t) for t in tables]
        names = list(results.datasets)
        columns: dict[str, Any] = {
            "dataset": pd.Categorical.from_codes(
                np.repeat(np.arange(len(names)), sizes), categories=names
            ),
        }
        for column in schema.CELL_COLUMNS:
            parts = [np.asarray(t.columns[column]) for t in tables]
            columns[column] = np.concatenate(parts) if parts else np.array([])
        for column in _INT_COLUMNS:
            # A dataset without cells stores empty float arrays; keep integer columns integer.
            columns[column] = columns[column].astype(np.int64)
        columns["status"] = pd.Categorical(columns["status"], categories=schema.STATUSES)
        frame = pd.DataFrame(columns)
        arch_ids = frame["arch_id"].to_numpy(dtype=np.int64)
        position = self.architectures.index.get_indexer(arch_ids)
        if (position < 0).any():
            missing = sorted(set(arch_ids[position < 0].tolist()))[:10]
            raise schema.CorruptResultError(
                f"cells name architectures {missing} absent from /architectures"
            )
        archs = self.architectures.iloc[position].reset_index(drop=True)
        return pd.concat([frame, archs], axis=1)

    # ---- what the study holds ---------------------------------------------------------
    @property
    def reference(self) -> str:
        """The study's declared reference dataset (root attribute), else `imagenet`."""
        return str(self.attrs.get("reference") or DEFAULT_REFERENCE)

    @property
    def dataset_names(self) -> list[str]:
        return list(self.datasets)

    def subsets(self, parent: str) -> dict[str, int]:
        """Datasets that keep k of the classes of `parent` (kind "subset"), with their k."""
        self.check_dataset(parent)
        return {
            name: len(info.subset_classes) or info.classes
            for name, info in self.datasets.items()
            if info.parent == parent and info.kind == "subset"
        }

    def controls(self, parent: str) -> dict[str, int]:
        """Size controls of `parent` (kind "control": every class kept, fewer training
        images), with their number of training images."""
        self.check_dataset(parent)
        return {
            name: info.num_train
            for name, info in self.datasets.items()
            if info.parent == parent and info.kind == "control"
        }

    def check_dataset(self, name: str, role: str = "dataset") -> str:
        if name not in self.datasets:
            raise ValueError(
                f"{role} {name!r} is not in the results; datasets: {self.dataset_names}"
            )
        return name

    # ---- queries ------------------------------------------------------------------------
    def query(
        self,
        dataset: str | Iterable[str] | None = None,
        arch: int | Iterable[int] | None = None,
        seed: int | Iterable[int] | None = None,
        status: str | Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """The cells matching every given filter (each a value or a list of values)."""
        keep = np.ones(len(self.cells), dtype=bool)
        filters = (
            ("dataset", dataset, self.dataset_names),
            ("arch_id", arch, self.architectures.index),
            ("seed", seed, np.unique(self.cells["seed"])),
            ("status", status, schema.STATUSES),
        )
        for column, wanted, valid in filters:
            if wanted is not None:
                values = _choices(column, wanted, valid)
                keep &= self.cells[column].isin(values).to_numpy()
        return self.cells[keep]

    def _grid(self, cells: pd.DataFrame, column: str, how: str) -> np.ndarray:
        """architecture x dataset x seed of `column` over `cells` (NaN where none): the
        mean of the finite values ("mean") or their maximum ("max")."""
        arch = self.architectures.index.get_indexer(cells["arch_id"].to_numpy())
        data = cells["dataset"].cat.codes.to_numpy()
        seeds, seed = np.unique(cells["seed"].to_numpy(), return_inverse=True)
        values = cells[column].to_numpy(dtype=float)
        keep = np.isfinite(values)
        shape = (len(self.architectures), len(self.dataset_names), max(len(seeds), 1))
        where = (arch[keep], data[keep], seed.reshape(-1)[keep])
        if how == "max":
            out = np.full(shape, -np.inf)
            np.maximum.at(out, where, values[keep])
            return np.where(np.isfinite(out), out, np.nan)
        total, count = np.zeros(shape), np.zeros(shape)
        np.add.at(total, where, values[keep])
        np.add.at(count, where, 1.0)
        with np.errstate(all="ignore"):
            return total / count

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            values,
            index=self.architectures.index,
            columns=pd.Index(self.dataset_names, name="dataset"),
        )

    def errors(self, metric: str = "top1_err", *, status: str = "done") -> pd.DataFrame:
        """architecture x dataset: the mean over seeds of the `status` cells (NaN if none)."""
        _choices("metric", metric, METRICS)
        grid = self._grid(self.query(status=status), metric, "mean")
        # Each seed's cell is one value, so the mean over seeds is the mean over cells.
        with np.errstate(all="ignore"):
            means = np.nansum(grid, axis=2) / np.isfinite(grid).sum(axis=2)
        return self._frame(means)

    def seed_errors(self, dataset: str, metric: str = "top1_err") -> pd.DataFrame:
        """architecture x seed for one dataset's done cells (NaN where a seed is missing)."""
        self.check_dataset(dataset)
        _choices("metric", metric, METRICS)
        done = self.query(status="done")
        if metric not in self._by_seed:  # one grid of every dataset, sliced per call
            self._by_seed[metric] = self._grid(done, metric, "mean")
        column = self.dataset_names.index(dataset)
        seeds = np.unique(done["seed"].to_numpy())
        part = self._by_seed[metric][:, column, : len(seeds)]
        have = np.isfinite(part).any(axis=0)
        return pd.DataFrame(
            part[:, have],
            index=self.architectures.index,
            columns=pd.Index(seeds[have].tolist(), name="seed"),
        )

    def curve(self, dataset: str, name: str = "test_top1_err") -> pd.DataFrame:
        """One per-epoch curve of a dataset's cells: rows (arch_id, seed), columns epochs."""
        self.check_dataset(dataset)
        _choices("curve", name, schema.CURVES)
        cells = self.cells[self.cells["dataset"] == dataset]
        index = pd.MultiIndex.from_arrays(
            [cells["arch_id"].to_numpy(), cells["seed"].to_numpy()], names=["arch_id", "seed"]
        )
        values = self._curves[dataset][name]
        return pd.DataFrame(
            values, index=index, columns=pd.RangeIndex(values.shape[1], name="epoch")
        )

    def as_trained(self, column: str) -> pd.DataFrame:
        """architecture x dataset: a per-cell complexity column (`flops`, `params`, `acts`:
        counted for the model as trained on that dataset, its resolution and classes)."""
        if column not in ("flops", "params", "acts"):
            raise ValueError(f"unknown complexity column {column!r}; valid: flops, params, acts")
        table = self._frame(np.nanmax(self._grid(self.cells, column, "max"), axis=2, initial=-1))
        return table.where(table > 0)

    def gpu_hours(self) -> pd.Series:
        """Measured GPU-hours per training (mean train_seconds/3600 of done cells) per dataset."""
        done = self.query(status="done")
        hours = done.groupby("dataset", observed=False)["train_seconds"].mean() / 3600.0
        return hours.reindex(self.dataset_names).rename("gpu_hours")

    # ---- export -------------------------------------------------------------------------
    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        self.cells.to_csv(path, index=False)
        return path

    def to_parquet(self, path: str | Path) -> Path:
        path = Path(path)
        self.cells.to_parquet(path, index=False)
        return path

    def __repr__(self) -> str:
        return (
            f"StudyResults({str(self.path)!r}, {len(self.architectures)} architectures, "
            f"{len(self.datasets)} datasets, {len(self.cells)} cells)"
        )


def open_results(path: str | Path) -> StudyResults:
    """Open a study folder's results.h5 (or the file itself) as a StudyResults."""
    file = results_path(path)
    return StudyResults(schema.read_results(file), path=file)
