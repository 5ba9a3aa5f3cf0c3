"""results.h5 -> the tidy cells frame, its queries and exports."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from analysis.frame import open_results, results_path


def test_cells_frame_has_one_row_per_cell_in_the_file(study, study_dir):
    with h5py.File(study_dir[0] / "results.h5") as handle:
        total = sum(len(group["arch_id"]) for group in handle["datasets"].values())
    assert len(study.cells) == total
    assert study.cells[["dataset", "arch_id", "seed"]].duplicated().sum() == 0


def test_cells_carry_architecture_parameters_and_complexity(study):
    row = study.cells.iloc[5]
    arch = study.architectures.loc[row["arch_id"]]
    assert row["arch_name"] == arch["arch_name"]
    depths = [row[f"depth_{i}"] for i in range(1, 5)]
    widths = [row[f"width_{i}"] for i in range(1, 5)]
    assert row["total_depth"] == sum(depths)
    assert row["cumulative_width"] == sum(widths)
    assert row["mean_bottleneck_ratio"] == pytest.approx(
        np.mean([row[f"bottleneck_ratio_{i}"] for i in range(1, 5)])
    )
    assert row["flops_224"] == arch["flops_224"] > 0


def test_query_filters_by_every_given_field(study):
    cells = study.query(dataset="cifar10", arch=[3, 4], seed=1, status="done")
    assert set(cells["dataset"]) <= {"cifar10"}
    assert set(cells["arch_id"]) <= {3, 4}
    assert set(cells["seed"]) == {1}
    assert len(cells) == len(
        study.cells[
            (study.cells["dataset"] == "cifar10")
            & study.cells["arch_id"].isin([3, 4])
            & (study.cells["seed"] == 1)
            & (study.cells["status"] == "done")
        ]
    )


def test_query_rejects_unknown_names_listing_the_valid_ones(study):
    with pytest.raises(ValueError, match=r"unknown dataset \['cifar11'\]; valid: .*cifar10"):
        study.query(dataset="cifar11")
    with pytest.raises(ValueError, match="unknown status"):
        study.query(status="running")


def test_errors_are_the_mean_over_seeds_of_done_cells(study):
    errors = study.errors()
    done = study.query(dataset="insects", arch=7, status="done")
    assert errors.loc[7, "insects"] == pytest.approx(done["top1_err"].mean())
    assert errors.shape == (len(study.architectures), len(study.datasets))


def test_errors_are_missing_where_no_cell_finished(study):
    errors = study.errors()
    cells = study.cells
    finished = (
        cells[cells["status"] == "done"].groupby(["arch_id", "dataset"], observed=True).size()
    )
    assert errors.notna().sum().sum() == len(finished)


def test_seed_errors_have_one_column_per_seed(study):
    by_seed = study.seed_errors("cifar100")
    assert list(by_seed.columns) == [0, 1]
    row = study.query(dataset="cifar100", arch=11, seed=1, status="done")
    if len(row):
        assert by_seed.loc[11, 1] == row["top1_err"].iloc[0]


def test_reference_and_subsets_come_from_the_file(study):
    assert study.reference == "imagenet"
    assert study.subsets("imagenet") == {
        "imagenet_k10": 10,
        "imagenet_k100": 100,
        "imagenet_k50": 50,
        "imagenet_k500": 500,
    }


def test_gpu_hours_are_mean_train_seconds_over_3600(study):
    done = study.query(dataset="imagenet_k50", status="done")
    assert study.gpu_hours()["imagenet_k50"] == pytest.approx(done["train_seconds"].mean() / 3600)


def test_curve_has_one_row_per_cell_and_one_column_per_epoch(study):
    curve = study.curve("cifar10", "test_top1_err")
    assert curve.shape == (len(study.query(dataset="cifar10")), 10)


def test_csv_and_parquet_round_trip_the_cells(study, tmp_path):
    csv = pd.read_csv(study.to_csv(tmp_path / "cells.csv"))
    parquet = pd.read_parquet(study.to_parquet(tmp_path / "cells.parquet"))
    for frame in (csv, parquet):
        assert len(frame) == len(study.cells)
        np.testing.assert_allclose(
            frame["top1_err"].to_numpy(float), study.cells["top1_err"].to_numpy(float)
        )
    assert list(parquet["dataset"].astype(str)) == list(study.cells["dataset"].astype(str))


def test_open_results_accepts_a_folder_or_the_file(study_dir):
    folder = study_dir[0]
    assert results_path(folder) == folder / "results.h5"
    assert len(open_results(folder / "results.h5").cells) == len(open_results(folder).cells)


def test_a_folder_without_results_names_the_remedy(tmp_path):
    with pytest.raises(FileNotFoundError, match="anysweep collect"):
        open_results(tmp_path)
