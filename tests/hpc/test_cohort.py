"""Cohorts: cells of one (dataset, seed, recipe) trained in lockstep from one loader give, on
CPU, the very numbers of training each cell alone; faults stay per member."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from anynet.arch import Architecture
from hpc.study.recipe import Recipe
from hpc.worker.cohort import train_cohort
from hpc.worker.train import CellInterrupted, CellRun, cell_seed, train_cell, train_cells
from loaders.pipelines import build_loaders
from loaders.prepare import prepare
from loaders.registry import get_dataset

RECIPE = Recipe(epochs=3, batch_size=64, base_lr=1.0, test_batch_size=512)
MEASURED = ("train_loss", "train_top1_err", "test_top1_err", "test_top5_err")
ARCHS = [
    Architecture(
        depths=(d1, 1),
        widths=(w, 16),
        bottleneck_ratios=(1.0, 1.0),
        group_widths=(g, 8),
        stem_width=8,
        stem="small",
    )
    for d1, w, g in [(1, 8, 8), (2, 8, 4), (1, 16, 8), (2, 16, 16), (1, 24, 8)]
]


@pytest.fixture(scope="module", params=["memory", "ffcv"])
def digits(request, tmp_path_factory):
    torch.set_num_threads(1)
    spec = get_dataset("digits", resolution=8, backend=request.param)
    prepared = prepare(spec, tmp_path_factory.mktemp("data"), progress=False)
    train, test = build_loaders(
        prepared, batch_size=64, test_batch_size=512, device="cpu", num_workers=1
    )
    return train, test, prepared.num_classes


def _init(i: int) -> int:
    return cell_seed("digits", i, 0)


@pytest.fixture(scope="module")
def solo(digits):
    train, test, classes = digits
    return [
        train_cell(a, train, test, RECIPE, seed=0, num_classes=classes, init_seed=_init(i))
        for i, a in enumerate(ARCHS)
    ]


def _cohort(digits, k, **kwargs):
    train, test, classes = digits
    return train_cells(
        ARCHS[:k],
        train,
        test,
        RECIPE,
        seed=0,
        num_classes=classes,
        init_seeds=[_init(i) for i in range(k)],
        **kwargs,
    )


def _assert_same_numbers(a, b):
    for name in MEASURED:
        np.testing.assert_array_equal(a.curves[name], b.curves[name], err_msg=name)
    assert (a.status, a.top1_err, a.top5_err, a.best_epoch) == (
        b.status,
        b.top1_err,
        b.top5_err,
        b.best_epoch,
    )


class Recording:
    """A train loader that keeps a digest of every batch it hands out."""

    def __init__(self, loader):
        self.loader, self.seen = loader, []

    def __len__(self):
        return len(self.loader)

    def epoch(self, seed, epoch):
        for inputs, labels in self.loader.epoch(seed, epoch):
            digest = hashlib.sha256(inputs.contiguous().numpy().tobytes())
            digest.update(labels.numpy().tobytes())
            self.seen.append(digest.hexdigest())
            yield inputs, labels


def test_one_seed_gives_every_architecture_the_same_batches_and_augmentations(digits):
    train, test, classes = digits
    seen = []
    for arch, seed in [(ARCHS[0], 0), (ARCHS[3], 0), (ARCHS[0], 1)]:
        recording = Recording(train)
        recipe = Recipe(epochs=2, batch_size=64, base_lr=1.0, test_batch_size=512)
        train_cell(arch, recording, test, recipe, seed=seed, num_classes=classes)
        seen.append(recording.seen)
    assert len(seen[0]) == 2 * len(train)
    assert seen[0] == seen[1]
    assert not set(seen[0]) & set(seen[2])  # another seed: other batches


@pytest.mark.parametrize("k", [1, 3, 5])
def test_cohort_members_are_bit_identical_to_training_each_cell_alone(digits, solo, k):
    outcomes = _cohort(digits, k)
    assert len(outcomes) == k
    for outcome, alone in zip(outcomes, solo, strict=False):
        _assert_same_numbers(outcome, alone)


class CountingPasses:
    """A test loader that counts the passes made over it."""

    def __init__(self, loader):
        self.loader, self.passes = loader, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.loader)


def test_a_cohort_loads_the_test_set_once_per_epoch_for_all_its_members(digits, solo):
    train, test, classes = digits
    counting = CountingPasses(test)
    outcomes = train_cells(
        ARCHS[:3],
        train,
        counting,
        RECIPE,
        seed=0,
        num_classes=classes,
        init_seeds=[_init(i) for i in range(3)],
    )
    assert counting.passes == RECIPE.epochs == 3
    for outcome, alone in zip(outcomes, solo, strict=False):
        _assert_same_numbers(outcome, alone)


def test_an_empty_test_set_fails_every_member_with_a_clear_error(digits):
    train, _, classes = digits
    outcomes = train_cells(
        ARCHS[:2], train, [], RECIPE, seed=0, num_classes=classes, init_seeds=[_init(0), _init(1)]
    )
    assert [str(o) for o in outcomes] == ["the test loader yielded no batches"] * 2


def test_a_diverging_member_leaves_and_the_others_finish_as_alone(digits, solo):
    train, test, classes = digits
    runs = [
        CellRun(
            a, RECIPE, seed=0, num_classes=classes, steps_per_epoch=len(train), init_seed=_init(i)
        )
        for i, a in enumerate(ARCHS[:3])
    ]
    with torch.no_grad():
        next(runs[1].model.parameters()).fill_(float("nan"))
    train_cohort(runs, train, test, seed=0)
    diverged = runs[1].outcome()
    assert (diverged.status, diverged.diverged_epoch, diverged.epochs) == ("diverged", 0, 0)
    _assert_same_numbers(runs[0].outcome(), solo[0])
    _assert_same_numbers(runs[2].outcome(), solo[2])


def test_a_failing_member_keeps_its_error_and_the_others_finish_as_alone(digits, solo, tmp_path):
    unwritable = tmp_path / "a-directory.pt"
    unwritable.mkdir()
    outcomes = _cohort(digits, 3, checkpoint_paths=[None, unwritable, None])
    assert isinstance(outcomes[1], OSError)
    _assert_same_numbers(outcomes[0], solo[0])
    _assert_same_numbers(outcomes[2], solo[2])


def test_an_interrupted_cohort_resumes_every_member_to_its_solo_numbers(digits, solo, tmp_path):
    train = digits[0]
    polls = []
    paths = [tmp_path / f"{i}.pt" for i in range(3)]

    def stop_in_second_epoch() -> bool:
        polls.append(1)
        return len(polls) == len(train) + 1 + 5

    with pytest.raises(CellInterrupted, match=f"epoch 2/3 at step 5/{len(train)}"):
        _cohort(digits, 3, checkpoint_paths=paths, stop_flag=stop_in_second_epoch)
    resumed = _cohort(digits, 3, checkpoint_paths=paths)
    assert [o.resumed_epoch for o in resumed] == [1, 1, 1]
    for outcome, alone in zip(resumed, solo, strict=False):
        _assert_same_numbers(outcome, alone)


def test_members_at_different_epochs_resume_to_their_solo_numbers(digits, solo, tmp_path):
    train, test, classes = digits
    paths = [tmp_path / f"{i}.pt" for i in range(3)]
    for i, stop_after in [(0, 1), (2, 2)]:  # member 0 stands after epoch 1, member 2 after 2
        polls = []
        with pytest.raises(CellInterrupted, match=f"stopped after epoch {stop_after}/3"):
            train_cell(
                ARCHS[i],
                train,
                test,
                RECIPE,
                seed=0,
                num_classes=classes,
                init_seed=_init(i),
                checkpoint_path=paths[i],
                stop_flag=lambda p=polls, n=stop_after: (
                    p.append(1) or len(p) == n * (len(train) + 1)
                ),
            )
    resumed = _cohort(digits, 3, checkpoint_paths=paths)
    assert [o.resumed_epoch for o in resumed] == [1, 0, 2]
    for outcome, alone in zip(resumed, solo, strict=False):
        _assert_same_numbers(outcome, alone)
