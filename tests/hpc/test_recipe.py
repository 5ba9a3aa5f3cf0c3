"""The training recipe: defaults, schedules and validation of study.toml values."""

import math

import pytest

from hpc.study.recipe import AUGMENTS, Recipe


def test_defaults_are_the_regnet_population_protocol() -> None:
    r = Recipe()
    assert (r.epochs, r.batch_size, r.base_lr, r.momentum, r.weight_decay, r.schedule) == (
        10,
        128,
        0.05,
        0.9,
        5e-5,
        "cos",
    )


def test_lr_scales_linearly_with_batch_size() -> None:
    assert Recipe(batch_size=256).lr == pytest.approx(0.1)
    assert Recipe(batch_size=64).lr == pytest.approx(0.025)


def test_cosine_schedule_halves_at_midpoint_and_ends_at_zero() -> None:
    r = Recipe(epochs=10)
    assert r.lr_at(0) == pytest.approx(0.05)
    assert r.lr_at(5) == pytest.approx(0.025)
    assert r.lr_at(10) == pytest.approx(0.0, abs=1e-12)
    assert r.lr_at(2.5) == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_step_schedule_and_linear_warmup() -> None:
    r = Recipe(epochs=10, schedule="step", steps=(3, 6), warmup_epochs=1, warmup_factor=0.1)
    assert r.lr_at(0) == pytest.approx(0.005)
    assert r.lr_at(0.5) == pytest.approx(0.05 * 0.55)
    assert r.lr_at(4) == pytest.approx(0.005)
    assert r.lr_at(7) == pytest.approx(0.0005)


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\].*valid keys: .*epochs"):
        Recipe.from_dict({"epoch": 3})


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"recipe: epochs must be an integer, got str '3'"):
        Recipe.from_dict({"epochs": "3"})


def test_invalid_values_are_refused_with_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="schedule 'linear' is not one of"):
        Recipe(schedule="linear")
    with pytest.raises(ValueError, match="augment 'mixup' is not one of"):
        Recipe(augment="mixup")


def test_merged_overrides_and_round_trips() -> None:
    r = Recipe().merged({"epochs": 3, "steps": [1, 2]}, where="datasets.mnist.recipe")
    assert (r.epochs, r.steps) == (3, (1, 2))
    assert Recipe.from_dict(r.to_dict()) == r


def test_augment_names_match_the_loaders() -> None:
    from loaders.augment import AUGMENTS as LOADER_AUGMENTS

    assert AUGMENTS == LOADER_AUGMENTS
