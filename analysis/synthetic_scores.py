"""Training-free scores for a synthetic results.h5 (`analysis.synthetic`), with planted
relations to each dataset's true error, for the tests and benchmarks of the score analysis.
Written through `schema.add_scores`, as a scoring run would store them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from analysis import schema
from analysis.frame import Study, open_results, results_path
from analysis.synthetic import SyntheticTruth

# Planted Pearson correlation of each score's latent value with minus the true error.
DEFAULT_RELATIONS = {
    "naswot": 0.6,
    "synflow": 0.3,
    "grad_norm": 0.35,
    "snip": 0.4,
    "jacob_cov": 0.5,
}
DATA_FREE = ("synflow",)  # the same values on every dataset: it never sees the images
_SCALES = {  # a monotone map of the latent value to each score's usual range
    "naswot": lambda v: 300 + 12 * v,
    "synflow": lambda v: np.exp(40 + 3 * v),
    "grad_norm": lambda v: np.exp(1 + 0.8 * v),
    "snip": lambda v: np.exp(0.5 + v),
    "jacob_cov": lambda v: -60 + 5 * v,
}


def _standard(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


def synthetic_scores(
    path: str | Path,
    truth: SyntheticTruth,
    *,
    relations: Mapping[str, float] | None = None,
    datasets: Sequence[str] | None = None,
    seeds: int = 1,
    seed_noise: float = 0.3,
    shared: float = 0.5,
    minibatch_size: int = 64,
    seed: int = 0,
) -> dict[str, schema.ScoreTable]:
    """Store score tables of `datasets` (default all) in the synthetic results.h5 at `path`
    that `truth` describes, and return them.

    A score's latent value on dataset d is rho z_d + sqrt(1 - rho^2) (sqrt(shared) u +
    sqrt(1 - shared) v_d), z_d the standardised minus true error of d, u noise of the
    architecture shared by every dataset and v_d noise of the dataset; synflow uses the
    reference's z and u alone on every dataset. Each seed adds `seed_noise` standard
    normal noise. params and flops are the cells' counts as trained."""
    relations = dict(DEFAULT_RELATIONS if relations is None else relations)
    unknown = sorted(set(relations) - set(_SCALES))
    if unknown:
        raise ValueError(f"unknown synthetic scores {unknown}; valid: {sorted(_SCALES)}")
    study = open_results(path)
    names = list(truth.true_error) if datasets is None else list(datasets)
    rng = np.random.default_rng(seed)
    n = len(study.architectures)
    arch_noise = {name: rng.standard_normal(n) for name in relations}
    reference = _standard(-truth.true_error[truth.reference])
    tables = {}
    for dataset in names:
        z = _standard(-truth.true_error[dataset])
        latent = {}
        for name, rho in relations.items():
            own = rng.standard_normal(n)
            if name in DATA_FREE:
                latent[name] = rho * reference + np.sqrt(1 - rho**2) * arch_noise[name]
            else:
                noise = np.sqrt(shared) * arch_noise[name] + np.sqrt(1 - shared) * own
                latent[name] = rho * z + np.sqrt(1 - rho**2) * noise
        tables[dataset] = _table(rng, study, dataset, latent, seeds, seed_noise, minibatch_size)
    schema.add_scores(results_path(path), tables.values())
    return tables


def _table(
    rng: np.random.Generator,
    study: Study,
    dataset: str,
    latent: Mapping[str, np.ndarray],
    seeds: int,
    seed_noise: float,
    minibatch_size: int,
) -> schema.ScoreTable:
    ids = study.architectures.index.to_numpy()
    counts = {b: study.as_trained(b)[dataset].to_numpy(dtype=float) for b in ("params", "flops")}
    blocks = []
    for _ in range(seeds):
        columns = [
            _SCALES[name](values + seed_noise * rng.standard_normal(len(values)))
            for name, values in latent.items()
        ]
        blocks.append(np.column_stack([*columns, counts["params"], counts["flops"]]))
    return schema.ScoreTable(
        dataset=dataset,
        arch_ids=np.tile(ids, seeds),
        names=(*latent, "params", "flops"),
        values=np.vstack(blocks),
        minibatch_size=minibatch_size,
        seeds=np.repeat(np.arange(seeds), len(ids)),
    )
