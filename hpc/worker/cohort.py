"""Cohorts: cells of one (dataset, seed, recipe) trained in lockstep from one loader.

Each batch is produced once and stepped through every live member in turn (its own model,
optimiser, schedule, checkpoint and result), and each epoch's test set is loaded once and
evaluated by every member batch by batch, so decoding and augmenting is paid once per cohort
instead of once per cell. Data order belongs to (dataset, seed): every member would
see these very batches alone (`loader.epoch(seed, epoch)`), and each member's random
generators are parked between its steps, so on CPU a member's numbers are bit-identical to
training its cell alone. Solo training is a cohort of one (`hpc.worker.train.train_cell`).

Members that stand at different epochs (a cohort resumed from checkpoints written at
different times) are brought level first: an epoch trains only the members whose next epoch
it is, so the ones behind train alone until they catch up. A member that diverges or raises
leaves the cohort; the others go on.

On CUDA the members' steps are queued one after another; members of hpc.worker.graphs
(`[cluster] cuda_graphs`) replay each step as a CUDA graph on a stream of their own, so that
their kernels overlap (2.0x the eager cohort's rate at K = 8 on an H200, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class CellInterrupted(Exception):
    """A stop was requested mid-cell; the last epoch-end checkpoint is where it resumes."""


class EpochSource(Protocol):
    def __len__(self) -> int: ...
    def epoch(self, seed: int, epoch: int) -> Iterator[Batch]: ...


class Member(Protocol):
    """What the driver needs of one cell's training (`hpc.worker.train.CellRun` is the one)."""

    epoch: int  # the next epoch to train
    epochs: int
    active: bool  # False once finished, diverged or failed

    def begin_epoch(self) -> None: ...
    def step(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> bool: ...
    def end_training(self, data_seconds: float) -> bool: ...  # False: diverged
    def begin_eval(self) -> None: ...
    def eval_step(self, inputs: torch.Tensor, labels: torch.Tensor) -> None: ...
    def end_epoch(self, eval_data_seconds: float) -> None: ...
    def fail(self, exc: Exception) -> None: ...
    def swapped_in(self) -> contextlib.AbstractContextManager[None]: ...


def batches(loader: EpochSource, seed: int, epoch: int) -> Iterator[tuple[float, Batch]]:
    """The epoch's batches, each with the seconds spent waiting for it."""
    return _waited(loader.epoch(seed, epoch))


def _waited(source_batches: Iterable[Batch]) -> Iterator[tuple[float, Batch]]:
    source = iter(source_batches)
    while True:
        start = time.perf_counter()
        batch = next(source, None)
        waited = time.perf_counter() - start
        if batch is None:
            return
        yield waited, batch


def train_cohort(
    members: Sequence[Member],
    train_loader: EpochSource,
    test_loader: Iterable[Batch],
    *,
    seed: int,
    stop_flag: Callable[[], bool] | None = None,
) -> None:
    """Train every member to its last epoch; each member keeps its own outcome or error.

    `stop_flag` is polled after every batch (once for the whole cohort) and at every epoch
    end but the last: when it returns True, CellInterrupted is raised.
    """
    epochs = max((m.epochs for m in members), default=0)
    first = min((m.epoch for m in members if m.active), default=epochs)
    for epoch in range(first, epochs):
        live = [m for m in members if m.active and m.epoch == epoch]
        if live:
            _train_epoch(live, train_loader, test_loader, seed, epoch, stop_flag)
        if stop_flag is not None and epoch + 1 < epochs and stop_flag():
            raise CellInterrupted(f"stopped after epoch {epoch + 1}/{epochs}")


def _guarded(member: Member, swap: bool, action: Callable[[], object]) -> object:
    """Run one member's action; an error takes that member (only) out of the cohort."""
    try:
        if not swap:
            return action()
        with member.swapped_in():
            return action()
    except Exception as exc:  # noqa: BLE001 - the member records it as its result
        member.fail(exc)
        return False


def _train_epoch(
    live: list[Member],
    loader: EpochSource,
    test_loader: Iterable[Batch],
    seed: int,
    epoch: int,
    stop_flag: Callable[[], bool] | None,
) -> None:
    swap = len(live) > 1  # alone, a member owns the global generators outright
    for member in live:
        _guarded(member, swap, member.begin_epoch)
    steps = len(loader)
    data_seconds = 0.0
    count = 0
    for step, (waited, (inputs, labels)) in enumerate(batches(loader, seed, epoch), start=1):
        data_seconds += waited
        count = step
        for member in [m for m in live if m.active]:
            _guarded(member, swap, functools.partial(member.step, inputs, labels, step))
        if not any(m.active for m in live):
            return  # every member diverged or failed: the rest of the epoch serves no one
        if stop_flag is not None and stop_flag():
            raise CellInterrupted(
                f"stopped in epoch {epoch + 1}/{live[0].epochs} at step {step}/{steps}"
            )
    if not count:
        raise ValueError(f"the train loader yielded no batches in epoch {epoch}")
    trained = [
        m
        for m in live
        if m.active and _guarded(m, swap, functools.partial(m.end_training, data_seconds))
    ]
    eval_data_seconds = _evaluate(trained, test_loader)
    for member in [m for m in trained if m.active]:
        _guarded(member, swap, functools.partial(member.end_epoch, eval_data_seconds))


def _evaluate(members: list[Member], test_loader: Iterable[Batch]) -> float:
    """Evaluate every member in one pass over the test set, each batch loaded once for the
    cohort; returns the seconds spent waiting for test batches. Evaluation draws no random
    numbers, so the members' generators stay where they are."""
    for member in members:
        _guarded(member, False, member.begin_eval)
    waited = 0.0
    count = 0
    for wait, (inputs, labels) in _waited(test_loader):
        waited += wait
        count += 1
        for member in [m for m in members if m.active]:
            _guarded(member, False, functools.partial(member.eval_step, inputs, labels))
    if not count:
        for member in [m for m in members if m.active]:
            member.fail(ValueError("the test loader yielded no batches"))
    return waited
