"""The generating model of synthetic studies: fresh draws with known population values,
in memory exactly as written to results.h5, with subsets and size-matched controls."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.frame import StudyResults, open_results
from analysis.schema import read_results
from analysis.synthetic import (
    SyntheticDataset,
    default_datasets,
    synthetic_results,
    synthetic_study,
)

PAIR = [
    SyntheticDataset("ref", 10, 32, 1000, 500, rho=1.0),
    SyntheticDataset("target", 10, 32, 1000, 500, rho=0.5),
]


def test_each_study_draws_its_true_errors_afresh_around_the_population_value():
    sample_r = []
    for seed in range(200):
        _, truth = synthetic_study(
            architectures=24, seeds=1, datasets=PAIR, reference="ref", seed=seed, trait_signal=0
        )
        sample_r.append(np.corrcoef(truth.true_error["ref"], truth.true_error["target"])[0, 1])
    # A planted sample correlation would be 0.5 in every study; fresh draws scatter around
    # it with the sampling sd of r at n = 24, about (1 - rho^2) / sqrt(n - 1) = 0.16.
    assert truth.rho["target"] == 0.5
    assert np.mean(sample_r) == pytest.approx(0.5, abs=0.04)
    assert 0.12 < np.std(sample_r) < 0.2


def test_population_correlation_is_the_loadings_product():
    _, truth = synthetic_study(
        architectures=20000, seeds=1, trait_signal=0, curves=False, flops_range=(0, 1e15)
    )
    for a, b in (("imagenet", "cifar10"), ("cifar10", "imagenet_k10"), ("ham10000", "insects")):
        sample = np.corrcoef(truth.true_error[a], truth.true_error[b])[0, 1]
        assert sample == pytest.approx(truth.latent_correlation(a, b), abs=0.03)


def test_a_study_in_memory_equals_the_one_written_to_results_h5(tmp_path):
    options = dict(architectures=30, seeds=2, missing=0.1, diverged=0.05, failed=0.05, seed=4)
    memory, _ = synthetic_study(**options)
    synthetic_results(tmp_path / "results.h5", **options)
    written = read_results(tmp_path / "results.h5")
    assert list(written.datasets) == list(memory.datasets)
    for name, table in written.datasets.items():
        assert table.info == memory.datasets[name].info
        for column, values in table.columns.items():
            np.testing.assert_array_equal(values, memory.datasets[name].columns[column])
        for curve, values in table.curves.items():
            np.testing.assert_array_equal(values, memory.datasets[name].curves[curve])
    left, right = StudyResults(memory).errors(), open_results(tmp_path).errors()
    np.testing.assert_array_equal(left.to_numpy(), right.to_numpy())


def test_controls_keep_every_class_and_match_their_subsets_training_images():
    results, _ = synthetic_study(
        architectures=10, seeds=1, datasets=default_datasets(subset_ks=(10, 100), controls=True)
    )
    study = StudyResults(results)
    assert study.subsets("imagenet") == {"imagenet_k10": 10, "imagenet_k100": 100}
    assert study.controls("imagenet") == {"imagenet_n13000": 13_000, "imagenet_n130000": 130_000}
    infos = study.datasets
    assert infos["imagenet_n13000"].classes == 1000 and infos["imagenet_n13000"].kind == "control"
    assert infos["imagenet_k10"].num_train == infos["imagenet_n13000"].num_train


def test_complexity_is_counted_as_trained_for_each_dataset():
    results, _ = synthetic_study(architectures=10, seeds=1, curves=False)
    study = StudyResults(results)
    params = study.as_trained("params")
    flops = study.as_trained("flops")
    head = study.architectures["width_4"]
    expected = study.architectures["params_224"] - 990 * head  # 10 classes, not 1,000
    np.testing.assert_array_equal(params["cifar10"], expected)
    assert (flops["cifar10"] < study.architectures["flops_224"] / 10).all()  # 32 px, not 224
