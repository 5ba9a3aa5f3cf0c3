"""A chunk's data: the dataset's loaders, built once per process and reused by every cell
that trains on it (a new FFCV loader compiles for seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpc.scheduling.manifest import Manifest


@dataclass
class Loaders:
    """A dataset's train and test loaders and what a model needs to know of them."""

    key: str
    train: Any
    test: Any
    num_classes: int
    resolution: int


_cache: dict[str, Loaders] = {}


def loaders_for(manifest: Manifest, device: str) -> Loaders:
    """The manifest's dataset as loaders on `device`; the same object for every cell of this
    process that asks for the same dataset, recipe and device."""
    from loaders.pipelines import build_loaders
    from loaders.prepare import open_prepared
    from loaders.registry import DatasetSpec

    recipe = manifest.recipe
    key = repr(
        (
            sorted(manifest.dataset.items()),
            recipe.batch_size,
            recipe.test_batch_size,
            recipe.resolution,
            recipe.num_workers,
            recipe.augment,
            device,
            str(manifest.data_dir),
        )
    )
    if key not in _cache:
        _cache.clear()  # one dataset at a time: the previous one's memory goes
        spec = DatasetSpec.from_dict(manifest.dataset)
        prepared = open_prepared(spec, manifest.data_dir)
        resolution = recipe.resolution or spec.resolution
        train, test = build_loaders(
            prepared,
            batch_size=recipe.batch_size,
            test_batch_size=recipe.test_batch_size,
            resolution=resolution,
            device=device,
            num_workers=recipe.num_workers,
            augment=recipe.augment,
        )
        _cache[key] = Loaders(key, train, test, prepared.num_classes, resolution)
    return _cache[key]
