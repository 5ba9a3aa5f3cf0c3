"""The study's population: the sampled architectures (architectures.json, where an
architecture's id is its index) and how each trains on a dataset."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.files import write_json
from anynet.arch import Architecture
from hpc.study.spec import DatasetEntry, Study

ARCHITECTURES_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Population:
    """The study's sampled architectures: `archs[i]` has id i; `sampled[i]` is its raw draw."""

    archs: tuple[Architecture, ...]
    sampled: tuple[Architecture, ...]
    design: dict[str, Any]

    def __len__(self) -> int:
        return len(self.archs)


def read_population(study: Study) -> Population | None:
    """architectures.json as written by `sample_architectures`, or None when there is none;
    an error when it was sampled from another [design] than study.toml's."""
    path = study.layout.architectures
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        rows = data["architectures"]
        archs = tuple(Architecture.from_dict(r["arch"]) for r in rows)
        sampled = tuple(Architecture.from_dict(r["sampled"], raw=True) for r in rows)
        design = data["design"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path} is not an architectures file of anysweep ({exc}); move it away and run "
            "`anysweep sample` again"
        ) from None
    _check_design(study, design, path)
    return Population(archs, sampled, design)


def _check_design(study: Study, design: dict[str, Any], path: Path) -> None:
    current = study.design.to_dict()
    if design == current:
        return
    changed = sorted(k for k in set(design) | set(current) if design.get(k) != current.get(k))
    detail = ", ".join(f"{k}: {design.get(k)!r} then, {current.get(k)!r} now" for k in changed)
    raise ValueError(
        f"[design] of {study.layout.study_file} differs from the one {path.name} was sampled "
        f"with ({detail}); results would mix two populations. Restore [design], or start a "
        "new study folder for the new design"
    )


def sample_architectures(study: Study, *, progress: bool = False, write: bool = True) -> Population:
    """The study's architectures, sampled (and written to architectures.json) when the file
    holds fewer than asked for. Sampling is prefix-stable, so a larger study keeps ids."""
    from anynet.sampler import sample
    from anynet.spaces import get_space

    existing = read_population(study)
    wanted = study.settings.architectures
    if existing is not None and len(existing) >= wanted:
        return existing
    design = study.design
    samples = sample(
        get_space(design.space, **design.space_options()),
        wanted,
        seed=design.seed,
        resolution=design.resolution,
        num_classes=design.num_classes,
        flops=design.flops,
        params=design.params,
        acts=design.acts,
        progress=progress,
    )
    population = Population(
        tuple(s.arch for s in samples), tuple(s.sampled for s in samples), design.to_dict()
    )
    if existing is not None and population.archs[: len(existing)] != existing.archs:
        raise ValueError(
            f"sampling {wanted} architectures did not reproduce the {len(existing)} in "
            f"{study.layout.architectures}; the sampler changed since. Keep the file and "
            f"architectures = {len(existing)}, or start a new study folder"
        )
    if write:
        _write_population(study, population)
    return population


def _write_population(study: Study, population: Population) -> None:
    from anynet.complexity import complexity

    design = study.design
    rows = []
    for i, (arch, raw) in enumerate(zip(population.archs, population.sampled, strict=True)):
        cx = complexity(arch, resolution=design.resolution, num_classes=design.num_classes)
        rows.append(
            {
                "id": i,
                "name": arch.name,
                "arch": arch.to_dict(),
                "sampled": raw.to_dict(),
                "flops": cx.flops,
                "params": cx.params,
                "acts": cx.acts,
            }
        )
    write_json(
        study.layout.architectures,
        {"format": ARCHITECTURES_FORMAT, "design": population.design, "architectures": rows},
    )


def load_population(study: Study) -> Population:
    """architectures.json, holding at least the study's number of architectures."""
    population = read_population(study)
    if population is None:
        raise FileNotFoundError(
            f"no architectures sampled yet ({study.layout.architectures} does not exist): run "
            f"`anysweep sample {study.root}` (launch and run sample too), then train"
        )
    if len(population) < study.settings.architectures:
        raise FileNotFoundError(
            f"{study.layout.architectures} holds {len(population)} of the study's "
            f"{study.settings.architectures} architectures; run `anysweep sample {study.root}`"
        )
    return population


def dataset_arch(arch: Architecture, entry: DatasetEntry) -> Architecture:
    """The architecture as it trains on a dataset: the dataset may ask for another stem."""
    if entry.stem and entry.stem != arch.stem:
        return dataclasses.replace(arch, stem=entry.stem)
    return arch


@dataclasses.dataclass(frozen=True)
class ArchGroup:
    """Architectures that anynet's complexity_batch counts in one call: one stem and stage
    count; `stages` holds their depths, widths, bottleneck ratios and group widths (ids x
    stages)."""

    ids: np.ndarray
    stem: str
    stem_width: int
    se_ratio: float
    stages: tuple[np.ndarray, ...]


def arch_groups(archs: Sequence[Architecture]) -> list[ArchGroup]:
    """Architectures grouped for complexity_batch (counting 5,000 takes one call a group)."""
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(archs):
        groups.setdefault((a.stem, a.stem_width, a.se_ratio, a.num_stages), []).append(i)
    out = []
    for (stem, stem_width, se_ratio, _), ids in groups.items():
        rows = [archs[i] for i in ids]
        stages = tuple(
            np.asarray([getattr(a, key) for a in rows])
            for key in ("depths", "widths", "bottleneck_ratios", "group_widths")
        )
        out.append(ArchGroup(np.asarray(ids), stem, stem_width, se_ratio, stages))
    return out
