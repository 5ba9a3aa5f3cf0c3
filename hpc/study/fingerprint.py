"""What determines a cell's numbers: the one table of the recipe's and the dataset's keys that
do (IN) and those that change only speed (OUT), and the digests every cell records.

A key is IN when changing it changes a number in results.h5 on CPU;
tests/hpc/test_fingerprint_rule.py changes each key, trains a tiny cell and checks the table,
and fails for a key the table lacks. [cluster] and [study] keys (resources, cohorts, device
placement) never enter a fingerprint.

A cell records the dataset spec and the recipe it trained with, whole; `config_digest` names
that record (8 bytes), so that the few distinct ones of a study are compared, not every cell.
Comparing takes only the IN keys (`in_values`), so a speed-only change makes no cell stale.
An IN key at its default is left out: a key added later with a default that keeps today's
behaviour leaves every fingerprint as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

IN, OUT = True, False
DIGEST_BYTES = 8

KEYS: dict[tuple[str, str], bool] = {
    # The dataset (loaders' DatasetSpec).
    ("dataset", "name"): IN,  # names the data, and seeds each cell's initialisation
    ("dataset", "source"): IN,
    ("dataset", "path"): IN,
    ("dataset", "num_classes"): OUT,  # must be the data's own count (checked when prepared)
    ("dataset", "resolution"): IN,
    ("dataset", "backend"): IN,  # the memory and FFCV pipelines crop differently
    ("dataset", "encoding"): IN,
    ("dataset", "max_side"): IN,
    ("dataset", "jpeg_quality"): IN,
    ("dataset", "parent"): OUT,  # names the files; what they hold is source, path and options
    ("dataset", "k"): IN,
    ("dataset", "n"): IN,
    ("dataset", "subset_seed"): IN,
    ("dataset", "classes"): IN,
    ("dataset", "max_train"): IN,
    ("dataset", "max_test"): IN,
    ("dataset", "split_seed"): IN,
    ("dataset", "test_fraction"): IN,
    ("dataset", "binary"): IN,
    ("dataset", "label_names"): OUT,  # names only
    # The recipe (hpc.study.recipe.Recipe).
    ("recipe", "epochs"): IN,
    ("recipe", "batch_size"): IN,
    ("recipe", "base_lr"): IN,
    ("recipe", "momentum"): IN,
    ("recipe", "nesterov"): IN,
    ("recipe", "weight_decay"): IN,
    ("recipe", "wd_on_bn_bias"): IN,
    ("recipe", "label_smoothing"): IN,
    ("recipe", "schedule"): IN,
    ("recipe", "steps"): IN,
    ("recipe", "step_factor"): IN,
    ("recipe", "warmup_epochs"): IN,
    ("recipe", "warmup_factor"): IN,
    ("recipe", "resolution"): IN,
    ("recipe", "test_batch_size"): OUT,  # evaluation in batches: the same predictions
    ("recipe", "precision"): IN,
    ("recipe", "channels_last"): IN,  # another convolution order on CPU: other roundings
    ("recipe", "compile"): OUT,  # applied on CUDA only
    ("recipe", "num_workers"): OUT,  # FFCV decoding threads
    ("recipe", "augment"): IN,
}
SECTIONS = ("dataset", "recipe")


def _canonical(value: Any) -> Any:
    """JSON's view of a value: tuples and lists alike, keys sorted."""
    return json.loads(json.dumps(value, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class Defaults:
    dataset: dict[str, Any]
    recipe: dict[str, Any]


def _defaults() -> Defaults:
    from hpc.study.recipe import Recipe
    from loaders.registry import DatasetSpec

    def of(cls: Any) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = _canonical(f.default)
        return out

    return Defaults(of(DatasetSpec), of(Recipe))


_DEFAULTS: Defaults | None = None


def defaults() -> Defaults:
    """The default of every key that has one (a key at its default is left out)."""
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = _defaults()
    return _DEFAULTS


def recorded_config(spec: Mapping[str, Any], recipe: Mapping[str, Any] | None) -> str:
    """The canonical text of what a cell trained with: its dataset spec and recipe, whole
    (a recipe None when the cell did not record one: it is then not compared)."""
    data: dict[str, Any] = {"dataset": dict(spec)}
    if recipe is not None:
        data["recipe"] = dict(recipe)
    return json.dumps(data, sort_keys=True)


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:DIGEST_BYTES]


def config_digest(spec: Mapping[str, Any], recipe: Mapping[str, Any] | None) -> bytes:
    """Names one recorded (spec, recipe): equal records, equal digests."""
    return digest(recorded_config(spec, recipe))


def arch_digest(arch: Mapping[str, Any]) -> bytes:
    """Names the architecture a cell built (Architecture.to_dict(), stem included)."""
    return digest(json.dumps(dict(arch), sort_keys=True))


def in_values(spec: Mapping[str, Any], recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The IN keys away from their defaults, as `section.key`: what comparing looks at."""
    base = defaults()
    out: dict[str, Any] = {}
    for section, values, default in (
        ("dataset", spec, base.dataset),
        ("recipe", recipe, base.recipe),
    ):
        for key, value in values.items():
            if not KEYS.get((section, key), OUT):  # a key no longer known: inert
                continue
            value = _canonical(value)
            if key in default and value == default[key]:
                continue
            out[f"{section}.{key}"] = value
    return out


def in_values_of(config: str) -> tuple[dict[str, Any], set[str]]:
    """`in_values` of a `recorded_config` text, and the sections it recorded."""
    data = json.loads(config)
    return in_values(data.get("dataset", {}), data.get("recipe", {})), set(data)


def compared(now: Mapping[str, Any], sections: set[str]) -> dict[str, Any]:
    """The IN values of `now` in the sections a record holds (what it can be compared on)."""
    return {k: v for k, v in now.items() if k.partition(".")[0] in sections}


def fingerprint(spec: Mapping[str, Any], recipe: Mapping[str, Any], arch: Mapping[str, Any]) -> str:
    """A cell's fingerprint as results.h5 keeps it: hex digest of its IN values and its
    architecture (the seed is part of the cell's key)."""
    return fingerprint_of(in_values(spec, recipe), arch)


def fingerprint_of(values: Mapping[str, Any], arch: Mapping[str, Any]) -> str:
    """`fingerprint` from IN values already taken (`in_values`)."""
    return digest(json.dumps({"in": dict(values), "arch": dict(arch)}, sort_keys=True)).hex()


def differences(then: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The IN keys that differ, each as `key: old then, new now` (absent: the default)."""
    base = defaults()
    shown = []
    for name in sorted(set(then) | set(now)):
        if then.get(name, _MISSING) == now.get(name, _MISSING):
            continue
        section, _, key = name.partition(".")
        default = getattr(base, section, {}).get(key)
        old, new = then.get(name, default), now.get(name, default)
        shown.append(f"{name} {_show(old)} then, {_show(new)} now")
    return shown


_MISSING = object()


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


@dataclasses.dataclass(frozen=True)
class Trained:
    """What a cell records of what it trained with, and the digests that name it."""

    spec: str  # JSON of the dataset's spec
    recipe: str  # JSON of the recipe
    config: bytes  # config_digest
    arch: bytes  # arch_digest
    fingerprint: str  # `fingerprint`, as results.h5 keeps it


def trained(spec: Mapping[str, Any], recipe: Mapping[str, Any], arch: Mapping[str, Any]) -> Trained:
    """The record of a cell trained with this spec, recipe and architecture (dicts, as a
    manifest holds them)."""
    spec_json = json.dumps(dict(spec), sort_keys=True)
    recipe_json = json.dumps(dict(recipe), sort_keys=True)
    spec, recipe = json.loads(spec_json), json.loads(recipe_json)
    return Trained(
        spec_json,
        recipe_json,
        config_digest(spec, recipe),
        arch_digest(arch),
        fingerprint(spec, recipe, arch),
    )
