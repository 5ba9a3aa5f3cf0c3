"""The training recipe: every knob of one cell's training, recorded with its result.

Defaults are the RegNet population protocol (SGD, momentum 0.9, half-period cosine,
base lr 0.05 at batch 128, weight decay 5e-5, 10 epochs).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from hpc.study.tomlcheck import check_value
from loaders.registry import AUGMENTS

SCHEDULES = ("cos", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Recipe:
    # The least whole number each count may be (tomlcheck.check_value reads it).
    MINIMUMS: ClassVar[dict[str, int]] = {"epochs": 1, "batch_size": 1, "test_batch_size": 1}

    epochs: int = 10
    batch_size: int = 128  # per GPU; the only GPU, the study trains on one
    base_lr: float = 0.05  # at batch 128; the lr used is base_lr * batch_size / 128
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-5
    wd_on_bn_bias: bool = True  # pycls decays every parameter; False skips BN and biases
    label_smoothing: float = 0.0
    schedule: str = "cos"  # half-period cosine to 0 | step | constant
    steps: tuple[int, ...] = ()  # epochs at which a step schedule multiplies lr by step_factor
    step_factor: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up from warmup_factor * lr
    warmup_factor: float = 0.1
    resolution: int = 0  # 0: the dataset's own training resolution
    test_batch_size: int = 256
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = True  # the model's memory format, on CPU and CUDA
    compile: bool = False  # torch.compile the model (CUDA; costs a compile per cell)
    num_workers: int = 2  # FFCV decoding threads
    # Training augmentation (loaders' AUGMENTS): "auto" is random-resized crop + flip
    # above 64 px, pad-and-crop + flip at 64 px and below; "flip" and "none" suit short
    # trainings on small images, where augmentation mostly slows learning down.
    augment: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.base_lr > 0:
            problems.append(f"base_lr must be > 0, got {self.base_lr}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.augment not in AUGMENTS:
            problems.append(f"augment {self.augment!r} is not one of {AUGMENTS}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        # Against a valid epoch count only: a bad one is reported once, above.
        if self.warmup_epochs < 0 or (self.epochs >= 1 and self.warmup_epochs > self.epochs):
            problems.append(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if problems:
            raise ValueError("invalid recipe: " + "; ".join(problems))

    @property
    def lr(self) -> float:
        """The peak learning rate, scaled linearly from batch 128."""
        return self.base_lr * self.batch_size / 128

    def lr_at(self, epoch: float) -> float:
        """Learning rate at a (fractional) epoch, warm-up included."""
        if self.schedule == "cos":
            lr = 0.5 * self.lr * (1.0 + math.cos(math.pi * epoch / self.epochs))
        elif self.schedule == "step":
            lr = self.lr * self.step_factor ** sum(1 for s in self.steps if epoch >= s)
        else:
            lr = self.lr
        if epoch < self.warmup_epochs:
            alpha = epoch / self.warmup_epochs
            lr *= self.warmup_factor * (1.0 - alpha) + alpha
        return lr

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = list(self.steps)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "recipe") -> Recipe:
        """Build from a plain dict; an unknown key or a wrong type names the key and lists valid ones."""
        valid = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(valid))}"
            )
        clean: dict[str, Any] = {}
        for key, value in values.items():
            try:
                clean[key] = check_value(cls, key, value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        try:
            return cls(**clean)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc

    def merged(self, overrides: dict[str, Any], where: str = "recipe") -> Recipe:
        """This recipe with some fields overridden (a dataset's recipe over the study's)."""
        return Recipe.from_dict({**self.to_dict(), **overrides}, where=where)
