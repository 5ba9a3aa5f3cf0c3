"""Fixtures of the hpc tests: cell results appended to a study's packs as a worker appends
them (with the digests of what the study says now, unless a test says otherwise)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from analysis.schema import CellResult
from hpc.study import packs
from hpc.study.fingerprint import trained
from hpc.study.population import dataset_arch, sample_architectures
from hpc.study.spec import Study


def append_result(
    study: Study,
    dataset: str,
    arch_id: int,
    seed: int,
    status: str = "done",
    *,
    task: str = "T0001.test.0",
    recipe: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    log: str = "",
    **fields: Any,
) -> CellResult:
    """Append one cell's record to results/<dataset>/<task>.pack, trained with the study's
    recipe and spec of the dataset (or the `recipe` and `spec` given: another study's)."""
    entry = study.dataset(dataset)
    arch = dataset_arch(sample_architectures(study).archs[arch_id], entry).to_dict()
    made = trained(
        entry.spec.to_dict() if spec is None else spec,
        entry.recipe.to_dict() if recipe is None else recipe,
        arch,
    )
    result = CellResult(
        dataset=dataset,
        arch_id=arch_id,
        seed=seed,
        status=status,
        recipe=made.recipe,
        spec=made.spec,
        fingerprint=made.fingerprint,
        **fields,
    )
    path = study.layout.pack(dataset, task)
    packs.append(path, [packs.Entry(result, log, made.config, made.arch)])
    return result


@pytest.fixture
def record() -> Callable[..., CellResult]:
    """`record(study, dataset, arch_id, seed, status="done", **fields)`: see append_result."""
    return append_result
