"""Train one cell (architecture, dataset, seed): the loop every number of the study comes from.

Seeded from the cell, checkpointed at every epoch end and resumable from there with the same
numbers on CPU; bf16 autocast and channels_last on CUDA; evaluates the test set every epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._dynamo  # noqa: F401
from torch import nn

from analysis.schema import CURVES
from anynet.arch import Architecture
from anynet.model import build_model
from hpc.study.recipe import Recipe
from hpc.worker.checkpoint import (
    CorruptCheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from hpc.worker.cohort import Batch, train_cohort
from hpc.worker.cohort import CellInterrupted as CellInterrupted  # its callers import it from here
from loaders.pipelines import TrainLoader

# torch._dynamo above: torch.optim imports it when a process makes its first optimizer (2-8 s
# on a busy CPU); importing it with this module keeps that one-time cost out of the first
# cell's recorded wall time.

# Steps between two checks of the running loss for NaN/inf; a check syncs a CUDA stream.
DIVERGENCE_CHECK_STEPS = 16
# Seconds between two progress lines inside an epoch.
LOG_EVERY_S = 60.0
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainOutcome:
    """What one cell's training measured. Epochs count from 0; errors are percent (0-100)."""

    status: str  # "done" or "diverged"
    epochs: int  # epochs completed
    diverged_epoch: int  # the epoch whose loss became NaN/inf; -1 if none
    top1_err: float  # last completed epoch, test set; NaN when diverged
    top5_err: float
    best_top1_err: float  # best completed epoch
    best_epoch: int
    curves: dict[str, np.ndarray]  # one value per completed epoch (analysis.schema.CURVES)
    wall_seconds: float  # the whole cell: this run plus earlier runs up to their last checkpoint
    train_seconds: float  # training epochs only (data wait included, evaluation excluded)
    data_seconds: float  # of train_seconds, waiting for the next batch
    eval_seconds: float
    images_per_s: float  # training images per second of train_seconds
    peak_mem_bytes: int  # CUDA: peak allocated; CPU: the process's peak resident set
    resumed_epoch: int  # epochs restored from a checkpoint by this run (0: fresh start)
    overhead: dict[str, float] = field(default_factory=dict)  # this run: build, restore, checkpoint


def cell_seed(dataset: str, arch_id: int, seed: int) -> int:
    """The initialisation seed of a cell: stable across machines and Python runs."""
    digest = hashlib.sha256(f"{dataset}/{arch_id}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD as the recipe says; without `wd_on_bn_bias`, BN weights and biases are not decayed."""
    if recipe.wd_on_bn_bias:
        groups: Any = [{"params": list(model.parameters())}]
    else:
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(
        groups,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning rate from `Recipe.lr_at` at the fractional epoch."""
    peak = recipe.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: recipe.lr_at(step / steps_per_epoch) / peak
    )


def autocast_for(
    recipe: Recipe, device: torch.device
) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the forward pass's autocast context (a no-op one in fp32)."""
    bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


class Misses:
    """Top-1 and top-5 misses over test batches, summed on the device until `errors()`."""

    def __init__(self) -> None:
        self.wrong1: torch.Tensor | None = None
        self.wrong5: torch.Tensor | None = None
        self.total = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == labels[:, None]
        w1, w5 = (~hits[:, 0]).sum(), (~hits.any(dim=1)).sum()
        if self.wrong1 is None or self.wrong5 is None:
            self.wrong1, self.wrong5 = w1, w5
        else:
            self.wrong1, self.wrong5 = self.wrong1 + w1, self.wrong5 + w5
        self.total += labels.shape[0]

    def errors(self) -> tuple[float, float]:
        """(top-1, top-5) error in percent."""
        if self.wrong1 is None or self.wrong5 is None or not self.total:
            raise ValueError("the test loader yielded no batches")
        return 100.0 * self.wrong1.item() / self.total, 100.0 * self.wrong5.item() / self.total


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    test_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[float, float]:
    """(top-1, top-5) test error in percent; counts stay on the device until the end."""
    model.eval()
    misses = Misses()
    for images, labels in test_loader:
        with autocast():
            logits = model(images)
        misses.add(logits, labels)
    return misses.errors()


def _fingerprint(
    arch: Architecture, recipe: Recipe, seed: int, init_seed: int, num_classes: int
) -> str:
    # A checkpoint of another cell, or of this cell under another recipe, must not be resumed.
    return "|".join(
        [
            str(CHECKPOINT_FORMAT),
            arch.name,
            recipe.to_json(),
            str(seed),
            str(init_seed),
            str(num_classes),
        ]
    )


def _peak_mem(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _empty_history() -> dict[str, list[float]]:
    return {name: [] for name in (*CURVES, "eval_seconds", "images")}


def train_cell(
    arch: Architecture,
    train_loader: TrainLoader,
    test_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    recipe: Recipe,
    *,
    seed: int,
    num_classes: int,
    device: str = "cpu",
    checkpoint_path: Path | None = None,
    init_seed: int | None = None,
    log: Callable[[str], None] | None = None,
    stop_flag: Callable[[], bool] | None = None,
) -> TrainOutcome:
    """Train `arch` for `recipe.epochs` epochs, resuming from `checkpoint_path` when it holds
    an earlier run of the same cell, and checkpointing there after every epoch.

    `seed` orders the data (`train_loader.epoch(seed, epoch)`); `init_seed` (default `seed`)
    seeds the weights, see `cell_seed`. `stop_flag` is polled after every step: when it
    returns True the epoch is abandoned and CellInterrupted raised. A cohort of one.
    """
    validate(train_loader, recipe, num_classes)
    run = CellRun(
        arch,
        recipe,
        seed=seed,
        num_classes=num_classes,
        steps_per_epoch=len(train_loader),
        device=device,
        checkpoint_path=checkpoint_path,
        init_seed=init_seed,
        log=log,
    )
    train_cohort([run], train_loader, test_loader, seed=seed, stop_flag=stop_flag)
    return run.outcome()


def validate(train_loader: object, recipe: object, num_classes: int) -> None:
    """Reject bad input with a one-line error before anything is built."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a hpc.study.recipe.Recipe, got {type(recipe).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not isinstance(train_loader, Sized) or len(train_loader) < 1:
        raise ValueError("the train loader must have a length of at least one batch")


class CellRun:
    """One cell's training state: seeded, built, restored and compiled on creation, then
    stepped batch by batch by `hpc.worker.cohort.train_cohort`, evaluated and checkpointed at
    every epoch end. `outcome()` is its result; an error it raised is kept in `error`."""

    # A step frees the gradients before the backward pass; a member whose gradients live in
    # a CUDA graph's pool (hpc.worker.graphs) zeroes them in place instead.
    grads_to_none = True

    def __init__(
        self,
        arch: Architecture,
        recipe: Recipe,
        *,
        seed: int,
        num_classes: int,
        steps_per_epoch: int,
        device: str = "cpu",
        checkpoint_path: Path | None = None,
        init_seed: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.arch, self.recipe, self.epochs = arch, recipe, recipe.epochs
        self.device = torch.device(device)
        self.say = log or (lambda _msg: None)
        self.steps = steps_per_epoch
        self.checkpoint_path = checkpoint_path
        init_seed = seed if init_seed is None else init_seed
        self.fingerprint = _fingerprint(arch, recipe, seed, init_seed, num_classes)
        self.started = time.perf_counter()
        self._build(init_seed, num_classes)
        built = time.perf_counter()
        self.history, self.epoch, self.prior_seconds = _restore(
            checkpoint_path,
            self.fingerprint,
            self.model,
            self.optimizer,
            self.scheduler,
            self.device,
            self.say,
        )
        self.start_epoch = self.epoch
        self.overhead = {"build": built - self.started, "restore": time.perf_counter() - built}
        self.overhead["checkpoint"] = 0.0
        self._compile()
        self.rng = rng_state()  # parked here while other members of a cohort step
        self.diverged_epoch = -1
        self.error: Exception | None = None
        self.failed_at = 0.0  # when `fail` took it out of its cohort (time.monotonic)
        self.active = self.epoch < self.epochs
        if self.epoch:
            self.say(f"resumed after epoch {self.epoch}/{self.epochs} from {checkpoint_path}")

    def _build(self, init_seed: int, num_classes: int) -> None:
        seed_everything(init_seed)
        model = build_model(self.arch, num_classes=num_classes, in_channels=3).to(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.recipe.channels_last:  # faster on CPU too (about 1.2x for these small nets)
            model = model.to(memory_format=torch.channels_last)
        self.model: nn.Module = model
        self.optimizer = make_optimizer(model, self.recipe)
        self.scheduler = make_scheduler(self.optimizer, self.recipe, self.steps)

    def _compile(self) -> None:
        self.step_model: nn.Module = self.model
        if self.recipe.compile and self.device.type == "cuda":
            # One compiled graph per member (measured on an H200: no faster than eager for
            # one paper-band member, 50 s to compile; hpc.worker.graphs is what pays there).
            self.step_model = torch.compile(self.model)  # type: ignore[assignment]
        self.autocast = autocast_for(self.recipe, self.device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The global random generators hold this member's state while inside."""
        set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = rng_state()

    def begin_epoch(self) -> None:
        self.step_model.train()
        # Running sums stay on the device so a step never waits for the GPU.
        self.loss_sum = torch.zeros((), device=self.device)
        self.wrong = torch.zeros((), dtype=torch.long, device=self.device)
        self.images = 0
        self.compute_seconds = 0.0
        self.last_log = time.perf_counter()

    def step(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> bool:
        """One optimiser step on the batch; False (and out of the cohort) once diverged."""
        start = time.perf_counter()
        with self.autocast():
            logits = self.step_model(inputs)
            loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=self.grads_to_none)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        count = labels.shape[0]
        self.loss_sum += loss.detach() * count
        self.wrong += (logits.detach().argmax(dim=1) != labels).sum()
        self.images += count
        if step % DIVERGENCE_CHECK_STEPS == 0 and not self._check(step):
            return False
        self.compute_seconds += time.perf_counter() - start
        return True

    def _check(self, step: int) -> bool:
        """The periodic NaN/inf check (a CUDA sync) and progress line."""
        if not math.isfinite(self.loss_sum.item()):
            self._diverge()
            return False
        now = time.perf_counter()
        if now - self.last_log >= LOG_EVERY_S:
            self.last_log = now
            loss = self.loss_sum.item() / self.images
            self.say(
                f"epoch {self.epoch + 1}/{self.epochs} step {step}/{self.steps}: loss {loss:.4f}"
            )
        return True

    def _diverge(self) -> None:
        self.diverged_epoch, self.active = self.epoch, False
        self.say(f"epoch {self.epoch + 1}/{self.epochs}: loss is NaN/inf, the cell diverged")

    def fail(self, exc: Exception) -> None:
        """Leave the cohort with `exc` as this cell's result."""
        self.error, self.active = exc, False
        self.failed_at = time.monotonic()

    def end_training(self, data_seconds: float) -> bool:
        """The epoch's steps are done: False (and out of the cohort) if its loss diverged."""
        start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.data_seconds = data_seconds
        self.train_seconds = data_seconds + self.compute_seconds + time.perf_counter() - start
        self.mean_loss = self.loss_sum.item() / self.images
        if not math.isfinite(self.mean_loss):
            self._diverge()
            return False
        return True

    def begin_eval(self) -> None:
        self.step_model.eval()
        self.misses = Misses()
        self.eval_compute = 0.0

    @torch.inference_mode()
    def eval_step(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        start = time.perf_counter()
        with self.autocast():
            logits = self.step_model(inputs)
        self.misses.add(logits, labels)
        self.eval_compute += time.perf_counter() - start

    def end_epoch(self, eval_data_seconds: float) -> None:
        """Record, checkpoint and log the epoch just trained and evaluated."""
        start = time.perf_counter()
        top1, top5 = self.misses.errors()
        eval_seconds = eval_data_seconds + self.eval_compute + time.perf_counter() - start
        train_err = 100.0 * self.wrong.item() / self.images
        seconds, data_seconds, mean_loss = self.train_seconds, self.data_seconds, self.mean_loss
        values = (mean_loss, train_err, top1, top5, seconds, data_seconds, eval_seconds)
        names: tuple[str, ...] = ("train_loss", "train_top1_err", "test_top1_err", "test_top5_err")
        names += ("epoch_seconds", "data_seconds", "eval_seconds")
        for name, value in zip(names, values, strict=True):
            self.history[name].append(value)
        self.history["images"].append(self.images)
        self.epoch += 1
        self.active = self.epoch < self.epochs
        self._save()
        self.say(
            f"epoch {self.epoch}/{self.epochs}: loss {mean_loss:.4f} train err {train_err:.2f}% "
            f"test err {top1:.2f}% top-5 {top5:.2f}% ({seconds:.1f} s, data {data_seconds:.1f} s, "
            f"eval {eval_seconds:.1f} s)"
        )

    def _save(self) -> None:
        if self.checkpoint_path is None:
            return
        start = time.perf_counter()
        payload = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "wall_seconds": self.prior_seconds + time.perf_counter() - self.started,
        }
        save_checkpoint(self.checkpoint_path, payload)
        self.overhead["checkpoint"] += time.perf_counter() - start

    def outcome(self) -> TrainOutcome:
        """The cell's result; re-raises the error that took it out of its cohort."""
        if self.error is not None:
            raise self.error
        return _outcome(
            self.history,
            self.diverged_epoch,
            self.device,
            self.start_epoch,
            wall_seconds=self.prior_seconds + time.perf_counter() - self.started,
            overhead=dict(self.overhead),
        )


def _restore(
    path: Path | None,
    fingerprint: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    say: Callable[[str], None],
) -> tuple[dict[str, list[float]], int, float]:
    """Load a matching checkpoint into the model, optimizer, scheduler and generators.

    Returns (history, epochs done, wall seconds spent so far); a fresh start without one.
    """
    if path is None:
        return _empty_history(), 0, 0.0
    try:
        state = load_checkpoint(path, map_location=device)
    except CorruptCheckpointError as exc:
        say(f"starting afresh: {exc}")
        return _empty_history(), 0, 0.0
    if state is None:
        return _empty_history(), 0, 0.0
    if state.get("fingerprint") != fingerprint:
        say(f"starting afresh: {path} belongs to another cell or recipe")
        return _empty_history(), 0, 0.0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["history"], int(state["epoch"]), float(state["wall_seconds"])


def _outcome(
    history: dict[str, list[float]],
    diverged_epoch: int,
    device: torch.device,
    resumed_epoch: int,
    *,
    wall_seconds: float,
    overhead: dict[str, float],
) -> TrainOutcome:
    curves = {name: np.asarray(history[name], dtype=np.float64) for name in CURVES}
    test = curves["test_top1_err"]
    epochs = len(test)
    diverged = diverged_epoch >= 0
    best_epoch = int(np.argmin(test)) if epochs else -1
    train_seconds = float(curves["epoch_seconds"].sum())
    return TrainOutcome(
        status="diverged" if diverged else "done",
        epochs=epochs,
        diverged_epoch=diverged_epoch,
        top1_err=float("nan") if diverged or not epochs else float(test[-1]),
        top5_err=float("nan") if diverged or not epochs else float(curves["test_top5_err"][-1]),
        best_top1_err=float(test[best_epoch]) if epochs else float("nan"),
        best_epoch=best_epoch,
        curves=curves,
        wall_seconds=wall_seconds,
        train_seconds=train_seconds,
        data_seconds=float(curves["data_seconds"].sum()),
        eval_seconds=float(sum(history["eval_seconds"])),
        images_per_s=sum(history["images"]) / train_seconds if train_seconds > 0 else float("nan"),
        peak_mem_bytes=_peak_mem(device),
        resumed_epoch=resumed_epoch,
        overhead=overhead,
    )


def train_cells(
    archs: Sequence[Architecture],
    train_loader: TrainLoader,
    test_loader: Iterable[Batch],
    recipe: Recipe,
    *,
    seed: int,
    num_classes: int,
    init_seeds: Sequence[int | None] | None = None,
    checkpoint_paths: Sequence[Path | None] | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    stop_flag: Callable[[], bool] | None = None,
) -> list[TrainOutcome | Exception]:
    """Train a cohort: the cells `archs` of one (dataset, seed, recipe) from one loader.

    Each cell's outcome, or the error that took it out of the cohort, in the order of `archs`;
    on CPU every outcome is bit-identical to `train_cell` of that cell alone.
    """
    validate(train_loader, recipe, num_classes)
    n = len(archs)
    runs = [
        CellRun(
            arch,
            recipe,
            seed=seed,
            num_classes=num_classes,
            steps_per_epoch=len(train_loader),
            device=device,
            checkpoint_path=(checkpoint_paths or [None] * n)[i],
            init_seed=(init_seeds or [None] * n)[i],
            log=log,
        )
        for i, arch in enumerate(archs)
    ]
    train_cohort(runs, train_loader, test_loader, seed=seed, stop_flag=stop_flag)
    return [run.error if run.error is not None else run.outcome() for run in runs]
