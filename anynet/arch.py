"""The architecture record: one AnyNet network as per-stage depths, widths, bottleneck
ratios and group widths, plus the width/group compatibility rule that makes it buildable."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

STEMS = ("imagenet", "small")
"""``imagenet``: 3x3 conv stride 2; ``small``: 3x3 conv stride 1, for images of 64 px or less."""

DEFAULT_STEM_WIDTH = 32


@dataclass(frozen=True)
class Architecture:
    """One AnyNet architecture; stage i has ``depths[i]`` X blocks of width ``widths[i]``.

    The bottleneck width of stage i is ``round(widths[i] / bottleneck_ratios[i])`` and its 3x3
    conv has ``bottleneck width // group_widths[i]`` groups, so the group width must divide
    the bottleneck width (``adjusted()`` applies pycls's rule to make it so).
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    bottleneck_ratios: tuple[float, ...]
    group_widths: tuple[int, ...]
    stem_width: int = DEFAULT_STEM_WIDTH
    stem: str = "imagenet"
    se_ratio: float = 0.0

    def __post_init__(self) -> None:
        _normalise(self)
        _check_structure(self)
        _check_groups(self)

    @classmethod
    def raw(cls, **fields: Any) -> Architecture:
        """A record of a raw draw, before the compatibility rule: its group widths need not
        divide its bottleneck widths, so it describes a draw but cannot be built."""
        arch = object.__new__(cls)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        missing = [k for k, v in defaults.items() if v is dataclasses.MISSING and k not in fields]
        unknown = sorted(set(fields) - set(defaults))
        if missing or unknown:
            raise ValueError(
                f"architecture fields: missing {missing}, unknown {unknown}; "
                f"valid fields are {sorted(defaults)}"
            )
        for key, default in defaults.items():
            object.__setattr__(arch, key, fields.get(key, default))
        _normalise(arch)
        _check_structure(arch)
        return arch

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def bottleneck_widths(self) -> tuple[int, ...]:
        return tuple(
            int(round(w / b)) for w, b in zip(self.widths, self.bottleneck_ratios, strict=True)
        )

    @property
    def compatible(self) -> bool:
        """Whether every group width divides its stage's bottleneck width."""
        return all(
            wb % g == 0 for wb, g in zip(self.bottleneck_widths, self.group_widths, strict=True)
        )

    @property
    def name(self) -> str:
        """Short readable name, e.g. ``d1.2.4.1-w24.56.152.368-b1-g8``; a ratio or group
        width shared by all stages is written once."""
        parts = [
            "d" + _join(self.depths),
            "w" + _join(self.widths),
            "b" + _join(self.bottleneck_ratios),
            "g" + _join(self.group_widths),
        ]
        if self.stem != "imagenet":
            parts.append(self.stem)
        if self.stem_width != DEFAULT_STEM_WIDTH:
            parts.append(f"s{self.stem_width}")
        if self.se_ratio:
            parts.append(f"se{self.se_ratio:g}")
        return "-".join(parts)

    def adjusted(self) -> Architecture:
        """The buildable architecture pycls derives from this one (see ``adjust_widths``)."""
        widths, groups = adjust_widths(self.widths, self.bottleneck_ratios, self.group_widths)
        return Architecture(
            depths=self.depths,
            widths=tuple(int(w) for w in widths),
            bottleneck_ratios=self.bottleneck_ratios,
            group_widths=tuple(int(g) for g in groups),
            stem_width=self.stem_width,
            stem=self.stem,
            se_ratio=self.se_ratio,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, ints, floats and strings: fit for JSON, TOML and HDF5 attributes."""
        return {
            "depths": list(self.depths),
            "widths": list(self.widths),
            "bottleneck_ratios": list(self.bottleneck_ratios),
            "group_widths": list(self.group_widths),
            "stem_width": self.stem_width,
            "stem": self.stem,
            "se_ratio": self.se_ratio,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, raw: bool = False) -> Architecture:
        """Inverse of ``to_dict``; ``raw=True`` accepts a raw draw (see ``Architecture.raw``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an architecture must be a mapping, got {type(data).__name__}")
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown architecture keys {unknown}; valid keys are {sorted(valid)}")
        if raw:
            return cls.raw(**data)
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(
                f"architecture is missing keys {missing}; required: {sorted(required)}"
            )
        return cls(**data)


def adjust_widths(
    widths: Iterable[int] | np.ndarray,
    bottleneck_ratios: Iterable[float] | np.ndarray,
    group_widths: Iterable[int] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """pycls's ``adjust_block_compatibility`` on arrays of any shape; returns (widths, groups).

    With multiplier m = 1/b, the bottleneck width v = max(1, floor(w*m)) is rounded to a
    multiple of g (of lcm(g, m) when m > 1), g is first capped at v, and the stage width is
    derived back as floor(v*b). Widths already compatible come back unchanged.
    """
    b = np.asarray(bottleneck_ratios, dtype=np.float64)
    w = np.asarray(widths, dtype=np.float64)
    g = np.asarray(group_widths, dtype=np.int64)
    m = 1.0 / b
    v = np.maximum(1, np.floor(w * m)).astype(np.int64)
    g = np.minimum(g, v)
    q = np.where(m > 1, np.lcm(g, np.round(m).astype(np.int64)), g)
    # np.round rounds half to even, like Python's round() that pycls uses.
    v = np.maximum(q, (np.round(v / q) * q).astype(np.int64))
    return np.floor(v * b).astype(np.int64), g


def _join(values: Iterable[float]) -> str:
    values = list(values)
    if len(set(values)) == 1 and len(values) > 1:
        values = values[:1]
    return ".".join(f"{v:g}" for v in values)


def _as_tuple(arch: Architecture, key: str, kind: type) -> tuple:
    value = getattr(arch, key)
    if type(value) is tuple and all(type(v) is kind for v in value):
        return value  # the common case, kept cheap for the sampler
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{key} must be a sequence with one value per stage, got {value!r}")
    out = []
    for item in value:
        out.append(_scalar(key, item, kind))
    return tuple(out)


def _scalar(key: str, value: Any, kind: type) -> Any:
    if type(value) is kind:
        return value
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if kind is int and converted != value:
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    return converted


def _normalise(arch: Architecture) -> None:
    # Lists, numpy arrays and numpy scalars become tuples of Python numbers, so that
    # equal architectures hash equal whatever they were built from.
    setattr_ = object.__setattr__
    setattr_(arch, "depths", _as_tuple(arch, "depths", int))
    setattr_(arch, "widths", _as_tuple(arch, "widths", int))
    setattr_(arch, "bottleneck_ratios", _as_tuple(arch, "bottleneck_ratios", float))
    setattr_(arch, "group_widths", _as_tuple(arch, "group_widths", int))
    setattr_(arch, "stem_width", _scalar("stem_width", arch.stem_width, int))
    setattr_(arch, "se_ratio", _scalar("se_ratio", arch.se_ratio, float))


def _check_structure(arch: Architecture) -> None:
    lengths = {
        k: len(getattr(arch, k)) for k in ("depths", "widths", "bottleneck_ratios", "group_widths")
    }
    if len(set(lengths.values())) != 1:
        raise ValueError(f"stage tuples must have equal lengths, got {lengths}")
    if lengths["depths"] == 0:
        raise ValueError("an architecture needs at least one stage")
    for key, low in (("depths", 1), ("widths", 1), ("group_widths", 1)):
        for i, v in enumerate(getattr(arch, key)):
            if v < low:
                raise ValueError(f"stage {i + 1}: {key} must be positive, got {v}")
    for i, b in enumerate(arch.bottleneck_ratios):
        if not b > 0 or not math.isfinite(b):
            raise ValueError(f"stage {i + 1}: bottleneck ratio must be positive, got {b}")
    if arch.stem not in STEMS:
        raise ValueError(f"unknown stem {arch.stem!r}; valid stems are {list(STEMS)}")
    if arch.stem_width < 1:
        raise ValueError(f"stem_width must be positive, got {arch.stem_width}")
    if not arch.se_ratio >= 0.0 or not math.isfinite(arch.se_ratio):
        raise ValueError(f"se_ratio must be >= 0 (0 turns SE off), got {arch.se_ratio}")


def _check_groups(arch: Architecture) -> None:
    for i, (w, b, wb, g) in enumerate(
        zip(
            arch.widths,
            arch.bottleneck_ratios,
            arch.bottleneck_widths,
            arch.group_widths,
            strict=True,
        )
    ):
        if wb < 1 or wb % g:
            raise ValueError(
                f"stage {i + 1}: group width {g} does not divide the bottleneck width {wb} "
                f"(width {w} / bottleneck ratio {b:g}); Architecture.raw(...).adjusted() "
                "applies the width/group compatibility rule"
            )
