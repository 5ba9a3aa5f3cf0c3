"""The trainer of one cell, on real data (scikit-learn's digits at 8 px) with a tiny AnyNet."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from anynet.arch import Architecture
from hpc.study.recipe import Recipe
from hpc.worker.train import (
    CellInterrupted,
    cell_seed,
    evaluate,
    make_optimizer,
    make_scheduler,
    train_cell,
)
from loaders.pipelines import build_loaders
from loaders.prepare import prepare
from loaders.registry import get_dataset

ARCH = Architecture(
    depths=(1, 1),
    widths=(8, 16),
    bottleneck_ratios=(1.0, 1.0),
    group_widths=(8, 8),
    stem_width=8,
    stem="small",
)
RECIPE = Recipe(epochs=3, batch_size=64, base_lr=1.0, test_batch_size=512)
MEASURED = ("train_loss", "train_top1_err", "test_top1_err", "test_top5_err")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(train loader, test loader, classes) of digits; one thread, as the worker runs."""
    torch.set_num_threads(1)
    prepared = prepare(
        get_dataset("digits", resolution=8), tmp_path_factory.mktemp("data"), progress=False
    )
    train, test = build_loaders(prepared, batch_size=64, test_batch_size=512, device="cpu")
    return train, test, prepared.num_classes


@pytest.fixture(scope="module")
def whole(digits):
    """An uninterrupted run of the cell and its log lines."""
    lines: list[str] = []
    return _train(digits, log=lines.append), lines


def _train(digits, recipe=RECIPE, **kwargs):
    train, test, classes = digits
    return train_cell(
        ARCH, train, test, recipe, seed=kwargs.pop("seed", 0), num_classes=classes, **kwargs
    )


def _assert_same_numbers(a, b):
    for name in MEASURED:
        np.testing.assert_array_equal(a.curves[name], b.curves[name], err_msg=name)
    assert (a.top1_err, a.top5_err, a.best_top1_err, a.best_epoch) == (
        b.top1_err,
        b.top5_err,
        b.best_top1_err,
        b.best_epoch,
    )


def test_training_learns_digits_and_reports_percent_errors(whole):
    out, _ = whole
    assert out.status == "done"
    assert out.epochs == 3
    assert {len(v) for v in out.curves.values()} == {3}
    assert out.top1_err == out.curves["test_top1_err"][-1]
    assert out.top1_err < 60.0  # chance is 90 %
    assert 0.0 <= out.top5_err <= out.top1_err
    assert out.best_top1_err == out.curves["test_top1_err"].min()
    assert out.best_epoch == int(np.argmin(out.curves["test_top1_err"]))
    assert out.curves["train_loss"][-1] < out.curves["train_loss"][0]


def test_timings_split_epoch_time_into_data_wait_and_compute(whole):
    out, _ = whole
    epoch_s, data_s = out.curves["epoch_seconds"], out.curves["data_seconds"]
    assert np.all(epoch_s > 0)
    assert np.all((data_s >= 0) & (data_s < epoch_s))
    assert out.train_seconds == pytest.approx(epoch_s.sum())
    assert out.images_per_s == pytest.approx(
        3 * 22 * 64 / epoch_s.sum()
    )  # 22 full batches an epoch
    assert out.wall_seconds > out.train_seconds + out.eval_seconds
    assert out.peak_mem_bytes > 0


def test_same_seed_gives_identical_numbers(digits, whole):
    _assert_same_numbers(_train(digits), whole[0])


def test_another_init_seed_gives_other_numbers(digits, whole):
    other = _train(digits, init_seed=cell_seed("digits", 1, 0))
    assert not np.array_equal(other.curves["train_loss"], whole[0].curves["train_loss"])


def test_interrupted_cell_resumes_to_the_numbers_of_an_uninterrupted_run(digits, whole, tmp_path):
    polls = []

    def stop_in_second_epoch() -> bool:
        polls.append(1)
        return len(polls) == 22 + 1 + 5  # 22 steps, the epoch-end poll, 5 steps into epoch 2

    path = tmp_path / "0-s0.pt"
    with pytest.raises(CellInterrupted, match="epoch 2/3 at step 5/22"):
        _train(digits, checkpoint_path=path, stop_flag=stop_in_second_epoch)
    resumed = _train(digits, checkpoint_path=path)
    assert resumed.resumed_epoch == 1
    _assert_same_numbers(resumed, whole[0])


def test_cell_with_a_finished_checkpoint_reports_it_without_training(digits, tmp_path):
    path = tmp_path / "0-s0.pt"
    first = _train(digits, checkpoint_path=path)
    again = _train(digits, checkpoint_path=path, stop_flag=lambda: pytest.fail("trained again"))
    assert again.resumed_epoch == 3
    _assert_same_numbers(again, first)
    np.testing.assert_array_equal(again.curves["epoch_seconds"], first.curves["epoch_seconds"])


def test_checkpoint_of_another_recipe_is_not_resumed(digits, whole, tmp_path):
    path = tmp_path / "0-s0.pt"
    _train(
        digits,
        Recipe(epochs=1, batch_size=64, base_lr=1.0, test_batch_size=512),
        checkpoint_path=path,
    )
    lines: list[str] = []
    out = _train(digits, checkpoint_path=path, log=lines.append)
    assert out.resumed_epoch == 0
    assert any("belongs to another cell or recipe" in line for line in lines)
    _assert_same_numbers(out, whole[0])


def test_absurd_learning_rate_is_recorded_as_diverged_in_the_first_epoch(digits):
    out = _train(digits, Recipe(epochs=3, batch_size=64, base_lr=1e8, test_batch_size=512))
    assert (out.status, out.diverged_epoch, out.epochs) == ("diverged", 0, 0)
    assert math.isnan(out.top1_err) and math.isnan(out.best_top1_err)
    assert all(len(v) == 0 for v in out.curves.values())


def test_divergence_in_a_later_epoch_keeps_the_completed_epochs(digits):
    # lr 0.5 in epoch 0, then multiplied by 1e8 from epoch 1 on.
    recipe = Recipe(
        epochs=3,
        batch_size=64,
        base_lr=1.0,
        test_batch_size=512,
        schedule="step",
        steps=(1,),
        step_factor=1e8,
    )
    out = _train(digits, recipe)
    assert (out.status, out.diverged_epoch, out.epochs) == ("diverged", 1, 1)
    assert math.isnan(out.top1_err)
    assert out.best_top1_err == out.curves["test_top1_err"][0] < 90.0
    assert out.best_epoch == 0


def test_progress_of_every_epoch_goes_to_the_log(whole):
    _, lines = whole
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("loss" in line and "test err" in line for line in epoch_lines)


def test_progress_inside_an_epoch_is_logged_when_the_interval_passes(digits, monkeypatch):
    monkeypatch.setattr("hpc.worker.train.LOG_EVERY_S", 0.0)
    lines: list[str] = []
    _train(
        digits, Recipe(epochs=1, batch_size=64, base_lr=1.0, test_batch_size=512), log=lines.append
    )
    assert [line.split(":")[0] for line in lines if " step " in line] == ["epoch 1/1 step 16/22"]


def test_bf16_precision_trains_under_autocast(digits, whole):
    out = _train(digits, RECIPE.merged({"precision": "bf16"}))
    assert out.status == "done" and out.top1_err < 60.0
    assert not np.array_equal(out.curves["train_loss"], whole[0].curves["train_loss"])


def test_learning_rate_follows_the_recipe_at_every_step():
    recipe = Recipe(epochs=2, batch_size=256, base_lr=0.1, warmup_epochs=0.5)
    model = nn.Linear(2, 2)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch=10)
    seen = []
    for _ in range(20):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([recipe.lr_at(step / 10) for step in range(20)])
    assert seen[0] == pytest.approx(0.2 * 0.1)  # warm-up starts at warmup_factor * lr
    assert max(seen) == pytest.approx(recipe.lr_at(0.5))


def test_without_wd_on_bn_bias_only_weights_of_rank_two_or_more_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = make_optimizer(model, Recipe(wd_on_bn_bias=False, weight_decay=1e-4))
    decayed, plain = optimizer.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3, 3, 3])]
    assert decayed["weight_decay"] == 1e-4 and plain["weight_decay"] == 0.0
    assert len(plain["params"]) == 3  # conv bias, BN weight, BN bias


def test_evaluate_counts_top1_and_top5_misses_in_percent():
    logits = torch.eye(6)[[0, 1, 2, 3]] * 10 + torch.arange(6) * 0.1  # top-1 = row index
    labels = torch.tensor([0, 5, 2, 0])  # hit; rank 2; hit; rank 6 (beyond top-5)
    top1, top5 = evaluate(nn.Identity(), [(logits[:2], labels[:2]), (logits[2:], labels[2:])])
    assert (top1, top5) == (50.0, 25.0)


def test_cell_seed_is_stable_per_cell_and_differs_between_cells():
    seeds = {cell_seed(d, a, s) for d in ("digits", "mnist") for a in (0, 1) for s in (0, 1)}
    assert len(seeds) == 8
    assert cell_seed("digits", 3, 1) == cell_seed("digits", 3, 1)
    assert all(0 <= s < 2**63 for s in seeds)


def test_bad_input_is_rejected_before_any_training(digits):
    train, test, _ = digits
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        train_cell(ARCH, train, test, RECIPE, seed=0, num_classes=1)
    with pytest.raises(TypeError, match="hpc.study.recipe.Recipe"):
        train_cell(ARCH, train, test, RECIPE.to_dict(), seed=0, num_classes=10)
