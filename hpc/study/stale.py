"""Stale cells: results trained with what study.toml no longer says (another recipe, another
dataset option, another architecture), found through the results index by comparing its few
distinct recorded configs and architecture digests with the study as it is now
(hpc.study.fingerprint decides which keys count).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hpc.study.fingerprint import arch_digest, compared, differences, in_values, in_values_of
from hpc.study.index import ResultsIndex
from hpc.study.population import Population, dataset_arch
from hpc.study.spec import Study

UNKNOWN_ARCH = -1  # a record whose architecture is not known (its manifest is gone)


@dataclass(frozen=True)
class StaleGroup:
    """Records of one dataset trained with one recorded config that is not the study's now."""

    dataset: str
    config: int  # the recorded config's code in the results index
    records: int
    changes: tuple[str, ...]  # "recipe.epochs 1 then, 2 now"


@dataclass
class StaleCheck:
    """Per record of the index, whether it is stale; and why, grouped."""

    records: np.ndarray  # bool per index row
    groups: list[StaleGroup] = field(default_factory=list)
    arch_changed: dict[str, int] = field(default_factory=dict)  # dataset -> records

    def keys(self) -> list[str]:
        """Every change that makes a record stale, once each."""
        seen = dict.fromkeys(c for g in self.groups for c in g.changes)
        if self.arch_changed:
            seen["the architecture"] = None
        return list(seen)


def check_stale(study: Study, index: ResultsIndex, population: Population | None) -> StaleCheck:
    """Which records of the index the study, as it is now, would not have trained the same."""
    records = index.records
    datasets = records["dataset"].astype(np.int64)
    stale = np.zeros(len(index), dtype=bool)
    check = StaleCheck(stale)
    names = {d.name for d in study.datasets}
    now = {d.name: in_values(d.spec.to_dict(), d.recipe.to_dict()) for d in study.datasets}
    n_configs = max(len(index.configs), 1)
    pairs = np.unique(datasets * n_configs + records["config"])
    for pair in pairs.tolist():
        dataset, config = divmod(pair, n_configs)
        name = index.datasets[dataset]
        if name not in names:
            continue
        then, sections = in_values_of(index.config_texts[config])
        changes = differences(then, compared(now[name], sections))
        if changes:
            mask = (datasets == dataset) & (records["config"] == config)
            stale |= mask
            check.groups.append(StaleGroup(name, config, int(mask.sum()), tuple(changes)))
    if population is not None:
        _check_archs(study, index, population, check)
    return check


def _check_archs(
    study: Study, index: ResultsIndex, population: Population, check: StaleCheck
) -> None:
    """Records whose architecture digest is not the one the study builds for their id."""
    records = index.records
    lookup = {digest: code for code, digest in enumerate(index.archs)}
    archs = np.asarray(records["arch_id"], dtype=np.int64)
    known = (records["arch"] != UNKNOWN_ARCH) & (archs < len(population)) & (archs >= 0)
    by_stem: dict[str, np.ndarray] = {}
    for entry in study.datasets:
        code = index.datasets.index(entry.name) if entry.name in index.datasets else -1
        if code < 0:
            continue
        if entry.stem not in by_stem:
            by_stem[entry.stem] = np.array(
                [
                    lookup.get(arch_digest(dataset_arch(a, entry).to_dict()).hex(), -2)
                    for a in population.archs
                ],
                dtype=np.int64,
            )
        expected = by_stem[entry.stem]
        mine = known & (records["dataset"] == code)
        changed = mine.copy()
        changed[mine] = expected[archs[mine]] != records["arch"][mine]
        if changed.any():
            check.records |= changed
            check.arch_changed[entry.name] = int(changed.sum())


def refusal(check: StaleCheck, cells: int, verb: str) -> str:
    """The one-paragraph error of a verb that will not run beside stale cells."""
    keys = "; ".join(check.keys()[:6])
    return (
        f"{cells:,} cell(s) were trained with what study.toml no longer says ({keys}); "
        f"{verb} would mix them with new ones. Either revert study.toml, or run "
        f"`anysweep {verb} --retrain-stale`, which keeps their results under jobs/stale/ "
        "and trains them again"
    )
