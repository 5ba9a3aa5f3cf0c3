"""Synthetic studies drawn from a generating model with known parameters, for tests,
benchmarks and the calibration of the report's intervals.

Every architecture gets fresh random latent qualities (nothing is planted exactly in the
sample): the true error of dataset d is base - spread * L_d with

    L_d = rho_d * z0 + small_d * z1 + sqrt(1 - rho_d^2 - small_d^2) * u_d,

z0 (the reference's factor), z1 (a factor shared by small data: subsets, controls, small
targets) and u_d independent standard normals per architecture. So the population Pearson
correlation of the true errors of datasets a and b is rho_a rho_b + small_a small_b, and
each seed adds independent normal noise of sd `seed_noise`. `trait_signal` > 0 ties z0 to
the architectures' complexity and z1 to their depth (then the latents are not exactly
normal). `synthetic_study` gives the study in memory, `synthetic_results` writes it through
`schema.write_results`, exactly as `anysweep collect` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis import schema


@dataclass(frozen=True)
class SyntheticDataset:
    """A dataset of the synthetic study and how its true error relates to the reference's."""

    name: str
    classes: int
    resolution: int
    num_train: int
    num_test: int
    rho: float = 0.0  # loading on the reference's factor z0
    small: float = 0.0  # loading on the shared "small data" factor z1
    base: float = 30.0  # mean error, percent
    spread: float = 4.0  # standard deviation of true error across architectures
    seed_noise: float = 1.0  # standard deviation of error between seeds
    coverage: float = 1.0  # share of architectures trained so far (a study still running)
    parent: str = ""
    subset_classes: tuple[int, ...] = ()
    kind: str = ""  # schema.KINDS; "" means "subset" with a parent, else "dataset"

    def __post_init__(self) -> None:
        if self.rho**2 + self.small**2 > 1 + 1e-12:
            raise ValueError(
                f"{self.name}: rho^2 + small^2 must be at most 1, got {self.rho}, {self.small}"
            )


@dataclass(frozen=True)
class SyntheticTruth:
    """What the generating model says: per dataset, the population Pearson correlation of
    true error with the reference's, the single-seed reliability (Pearson, before errors
    are clipped and rounded), and this sample's true (noise-free) errors."""

    reference: str
    rho: dict[str, float]
    reliability: dict[str, float]
    true_error: dict[str, np.ndarray] = field(repr=False)
    loadings: dict[str, tuple[float, float]] = field(default_factory=dict)  # (rho, small)

    def latent_correlation(self, a: str, b: str) -> float:
        """Population Pearson correlation of the true errors of datasets a and b."""
        if a == b:
            return 1.0
        (ra, sa), (rb, sb) = self.loadings[a], self.loadings[b]
        return ra * rb + sa * sb


def default_datasets(
    reference: str = "imagenet",
    subset_ks: Sequence[int] = (10, 50, 100, 500),
    controls: bool = False,
) -> list[SyntheticDataset]:
    """ImageNet, its class subsets (with `controls`, a size-matched control of each: all
    classes, the subset's number of training images), and the paper's kinds of targets."""
    rng = np.random.default_rng(12345)
    out = [
        SyntheticDataset(
            reference, 1000, 224, 1_281_167, 50_000, rho=1.0, base=38, spread=4, seed_noise=0.6
        )
    ]
    for k in subset_ks:
        out += _subset(reference, k, rng, controls)
    targets = (
        ("cifar10", 10, 32, 50_000, 10_000, 0.55, 0.6, 9, 2.0, 0.5),
        ("cifar100", 100, 32, 50_000, 10_000, 0.7, 0.4, 33, 3.0, 0.8),
        ("ham10000", 7, 64, 8_000, 2_000, 0.2, 0.5, 22, 1.5, 0.9),
        ("concrete", 2, 64, 32_000, 8_000, -0.3, 0.3, 1.2, 0.4, 0.25),
        ("powerline", 2, 64, 6_000, 2_000, -0.5, 0.2, 8, 1.2, 0.8),
        ("mlc2008", 9, 64, 30_000, 6_000, 0.35, 0.7, 28, 2.0, 0.9),
        ("insects", 10, 64, 12_000, 3_000, 0.8, 0.3, 18, 2.5, 0.8),
        ("natural", 8, 64, 5_500, 1_400, 0.6, 0.5, 16, 2.0, 1.0),
    )
    for name, classes, res, ntr, nte, rho, small, base, spread, noise in targets:
        if name == reference:
            continue
        small = min(small, 0.95 * np.sqrt(1 - rho**2))
        out.append(
            SyntheticDataset(name, classes, res, ntr, nte, rho, float(small), base, spread, noise)
        )
    return out


def _subset(
    reference: str, k: int, rng: np.random.Generator, control: bool
) -> list[SyntheticDataset]:
    """ImageNet restricted to k classes and, with `control`, its size-matched control."""
    alpha = 0.35 + 0.65 * np.log(k) / np.log(1000)
    small = float(np.sqrt(1 - alpha**2))
    noise = 1.2 - 0.1 * np.log10(k)
    out = [
        SyntheticDataset(
            f"{reference}_k{k}",
            k,
            224,
            1300 * k,
            50 * k,
            rho=float(alpha),
            small=small,
            base=20 + 0.02 * k,
            spread=3,
            seed_noise=noise,
            parent=reference,
            subset_classes=tuple(sorted(rng.choice(1000, k, replace=False).tolist())),
        )
    ]
    if control:
        # Every class, the subset's images: nearer the reference, as small as the subset.
        keep = float(min(1.0, alpha + 0.15))
        out.append(
            SyntheticDataset(
                f"{reference}_n{1300 * k}",
                1000,
                224,
                1300 * k,
                50_000,
                rho=keep,
                small=float(min(small, 0.95 * np.sqrt(1 - keep**2))),
                base=60 - 0.01 * k,
                spread=3,
                seed_noise=noise,
                parent=reference,
                kind="control",
            )
        )
    return out


def _architectures(
    rng: np.random.Generator, n: int, flops_range: tuple[float, float]
) -> dict[str, np.ndarray]:
    """AnyNetX_A-like architectures with a rough analytic complexity at 224 px."""
    kept: list[dict[str, np.ndarray]] = []
    total = 0
    while total < n:
        m = 20 * n + 1000
        depths = np.floor(np.exp(rng.uniform(0, np.log(17), (m, 4)))).astype(np.int64).clip(1, 16)
        sampled_w = (
            (np.exp(rng.uniform(np.log(8), np.log(1025), (m, 4))) // 8 * 8)
            .astype(np.int64)
            .clip(8, 1024)
        )
        ratios = rng.choice([1.0, 2.0, 4.0], (m, 4))
        sampled_g = rng.choice([1, 2, 4, 8, 16, 32], (m, 4))
        bottleneck = np.maximum(sampled_w / ratios, 1)
        groups = np.minimum(sampled_g, bottleneck).astype(np.int64)
        bottleneck = np.maximum(np.round(bottleneck / groups), 1) * groups
        widths = (bottleneck * ratios).astype(np.int64)
        flops, params, acts = _complexity(depths, widths, bottleneck, groups)
        ok = (flops >= flops_range[0]) & (flops <= flops_range[1])
        kept.append(
            {
                "depths": depths[ok],
                "widths": widths[ok],
                "bottleneck_ratios": ratios[ok],
                "group_widths": groups[ok],
                "sampled_widths": sampled_w[ok],
                "sampled_group_widths": sampled_g[ok],
                "flops": flops[ok],
                "params": params[ok],
                "acts": acts[ok],
            }
        )
        total += int(ok.sum())
    cols = {k: np.concatenate([part[k] for part in kept])[:n] for k in kept[0]}
    names = [
        "d{}-w{}-b{}-g{}".format(
            ".".join(map(str, d)),
            ".".join(map(str, w)),
            ".".join(f"{b:g}" for b in r),
            ".".join(map(str, g)),
        )
        for d, w, r, g in zip(
            cols["depths"],
            cols["widths"],
            cols["bottleneck_ratios"],
            cols["group_widths"],
            strict=True,
        )
    ]
    cols.update(
        id=np.arange(n),
        name=np.array(names, dtype=object),
        num_stages=np.full(n, 4),
        stem=np.array(["imagenet"] * n, dtype=object),
        stem_width=np.full(n, 32),
        se_ratio=np.zeros(n),
    )
    return cols


def _complexity(
    depths: np.ndarray, widths: np.ndarray, bottleneck: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, ...]:
    side = np.array([56, 28, 14, 7], dtype=float) ** 2
    w_in = np.concatenate([np.full((len(widths), 1), 32), widths[:, :-1]], axis=1)
    per_block = bottleneck * widths + 9 * bottleneck * groups + bottleneck * widths
    first = w_in * bottleneck + 9 * bottleneck * groups + bottleneck * widths + w_in * widths
    params = (first + (depths - 1) * per_block).sum(axis=1) + 864 + 1000 * widths[:, -1]
    flops = (
        ((first + (depths - 1) * per_block) * side).sum(axis=1)
        + 864 * 112**2
        + 1000 * widths[:, -1]
    )
    acts = ((2 * bottleneck + widths) * depths * side).sum(axis=1) + 32 * 112**2
    return flops.astype(np.int64), params.astype(np.int64), acts.astype(np.int64)


def _latents(
    rng: np.random.Generator, archs: Mapping[str, np.ndarray], count: int, trait_signal: float
) -> np.ndarray:
    """(architectures, count) independent standard normal latents, fresh for each study;
    with `trait_signal` the first two load on complexity and on depth (standardised in the
    sample), so that traits carry signal."""
    n = len(archs["id"])
    z = rng.standard_normal((n, count))
    if trait_signal:
        traits = np.stack([np.log(archs["flops"]), -np.log(archs["depths"].sum(axis=1))], axis=1)
        with np.errstate(all="ignore"):
            traits = np.nan_to_num((traits - traits.mean(0)) / traits.std(0))
        rest = np.sqrt(1 - trait_signal**2)
        z[:, :2] = trait_signal * traits + rest * z[:, :2]
    return z


def _info(spec: SyntheticDataset, recipe: str) -> schema.DatasetInfo:
    return schema.DatasetInfo(
        name=spec.name,
        classes=spec.classes,
        resolution=spec.resolution,
        num_train=spec.num_train,
        num_test=spec.num_test,
        source="synthetic",
        class_names=tuple(f"class{i}" for i in range(spec.classes)),
        recipe=recipe,
        parent=spec.parent,
        subset_classes=spec.subset_classes,
        spec=json.dumps({"name": spec.name, "source": "synthetic"}),
        kind=spec.kind,
    )


@dataclass(frozen=True)
class _Options:
    seeds: int
    missing: float
    diverged: float
    failed: float
    epochs: int
    curves: bool
    quantize: bool
    recipe: str


def synthetic_study(
    *,
    architectures: int = 200,
    seeds: int = 2,
    datasets: Sequence[SyntheticDataset] | None = None,
    reference: str = "imagenet",
    missing: float = 0.0,
    diverged: float = 0.0,
    failed: float = 0.0,
    epochs: int = 10,
    curves: bool = True,
    quantize: bool = True,
    flops_range: tuple[float, float] = (340e6, 400e6),
    trait_signal: float = 0.6,
    seed: int = 0,
) -> tuple[schema.Results, SyntheticTruth]:
    """One fresh draw of a study of architectures x datasets x seeds from the generating
    model (module docstring), in memory as `schema.read_results` would return it, and the
    model's truth. Errors are clipped to [0, chance] and, with `quantize`, rounded to whole
    test images."""
    if seeds < 1 or architectures < 3:
        raise ValueError(f"need seeds >= 1 and architectures >= 3, got {seeds} and {architectures}")
    specs = list(datasets) if datasets is not None else default_datasets(reference)
    if reference not in [s.name for s in specs]:
        raise ValueError(
            f"reference {reference!r} is not among the datasets {[s.name for s in specs]}"
        )
    rng = np.random.default_rng(seed)
    archs = _architectures(rng, architectures, flops_range)
    z = _latents(rng, archs, 2 + len(specs), trait_signal)
    recipe = json.dumps({"epochs": epochs, "batch_size": 128, "lr": 0.05, "optimizer": "sgd"})
    options = _Options(seeds, missing, diverged, failed, epochs, curves, quantize, recipe)
    truth, tables = {}, {}
    for d, spec in enumerate(specs):
        rest = np.sqrt(max(0.0, 1.0 - spec.rho**2 - spec.small**2))
        latent = spec.rho * z[:, 0] + spec.small * z[:, 1] + rest * z[:, 2 + d]
        truth[spec.name] = spec.base - spec.spread * latent
        info = _info(spec, recipe)
        tables[spec.name] = _table(rng, spec, info, archs, truth[spec.name], options)
    attrs = {
        "schema_version": schema.SCHEMA_VERSION,
        "created": "2024-01-01T00:00:00",
        "study": "synthetic",
        "reference": reference,
        "software": json.dumps(
            {"anysweep": "0.1.0", "generator": "analysis.synthetic", "seed": seed}
        ),
    }
    loadings = {s.name: (s.rho, s.small) for s in specs}
    ref = loadings[reference]
    result = SyntheticTruth(
        reference=reference,
        rho={n: ref[0] * r + ref[1] * s for n, (r, s) in loadings.items()},
        reliability={s.name: s.spread**2 / (s.spread**2 + s.seed_noise**2) for s in specs},
        true_error=truth,
        loadings=loadings,
    )
    tables = dict(sorted(tables.items()))  # the order results.h5 reads them in
    return schema.Results(attrs=attrs, architectures=archs, datasets=tables), result


def synthetic_results(path: str | Path, **options: Any) -> SyntheticTruth:
    """Write one fresh draw of `synthetic_study(**options)` as a results.h5 at `path`
    (through `schema.write_results`) and return the model's truth."""
    results, truth = synthetic_study(**options)
    attrs = {k: v for k, v in results.attrs.items() if k != "schema_version"}
    schema.write_results(
        Path(path),
        architectures=results.architectures,
        datasets=[t.info for t in results.datasets.values()],
        cells=[cell for t in results.datasets.values() for cell in _cell_results(t)],
        attrs=attrs,
    )
    return truth


def _table(
    rng: np.random.Generator,
    spec: SyntheticDataset,
    info: schema.DatasetInfo,
    archs: Mapping[str, np.ndarray],
    true: np.ndarray,
    o: _Options,
) -> schema.DatasetTable:
    """The dataset's cells as columns, in (architecture, seed) order as results.h5 holds
    them: every seed's errors first, then which cells exist and how they ended."""
    n = len(true)
    chance = 100.0 * (1 - 1 / spec.classes)
    noise = spec.seed_noise * rng.standard_normal((o.seeds, n))
    err = np.clip(true[None, :] + noise, 0.0, chance)
    if o.quantize:
        err = np.round(err / 100 * spec.num_test) / spec.num_test * 100
    fate = rng.random((o.seeds, n))
    time = _seconds(spec, archs, o.epochs)[None, :] * rng.lognormal(0, 0.05, (o.seeds, n))
    trained = np.arange(n)[None, :] < int(round(spec.coverage * n))
    exists = (fate >= o.missing) & trained
    status = np.where(
        fate < o.missing + o.failed,
        "failed",
        np.where(fate < o.missing + o.failed + o.diverged, "diverged", "done"),
    )
    seed_idx, arch_idx = np.nonzero(exists)
    order = np.lexsort((seed_idx, arch_idx))
    seed_idx, arch_idx = seed_idx[order], arch_idx[order]
    return _columns(spec, info, archs, o, arch_idx, seed_idx, status, err, time, chance)


def _seconds(spec: SyntheticDataset, archs: Mapping[str, np.ndarray], epochs: int) -> np.ndarray:
    # Training time follows the work done: images x epochs x flops, at a plausible GPU rate.
    scale = (spec.resolution / 224) ** 2
    return epochs * spec.num_train * 3 * archs["flops"] * scale / 4e12 + 30


def _as_trained(spec: SyntheticDataset, archs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """flops and params of the model as trained: the dataset's resolution and classes."""
    head = archs["widths"][:, -1]
    scale = (spec.resolution / 224) ** 2
    flops = (archs["flops"] - 1000 * head) * scale + spec.classes * head
    params = archs["params"] - 1000 * head + spec.classes * head
    return flops.astype(np.int64), params.astype(np.int64)


def _columns(
    spec: SyntheticDataset,
    info: schema.DatasetInfo,
    archs: Mapping[str, np.ndarray],
    o: _Options,
    arch_idx: np.ndarray,
    seed_idx: np.ndarray,
    status_grid: np.ndarray,
    err_grid: np.ndarray,
    time_grid: np.ndarray,
    chance: float,
) -> schema.DatasetTable:
    count = len(arch_idx)
    status = status_grid[seed_idx, arch_idx]
    done, diverged = status == "done", status == "diverged"
    err = np.where(done, err_grid[seed_idx, arch_idx], np.where(diverged, chance, np.nan))
    flops, params = _as_trained(spec, archs)
    text = lambda value: np.full(count, value, dtype=object)  # noqa: E731
    columns: dict[str, np.ndarray] = {
        "arch_id": arch_idx.astype(np.int64),
        "seed": seed_idx.astype(np.int64),
        "status": status.astype(object),
        "top1_err": err,
        "top5_err": np.where(done, np.clip(err * 0.3, 0, 100), np.nan),
        "best_top1_err": err,
        "best_epoch": np.where(done, o.epochs - 1, -1).astype(np.int64),
        "epochs": np.where(diverged, 2, o.epochs).astype(np.int64),
        "diverged_epoch": np.where(diverged, 1, -1).astype(np.int64),
        "train_seconds": np.where(done, time_grid[seed_idx, arch_idx], np.nan),
        "data_seconds": np.full(count, np.nan),
        "images_per_s": np.full(count, np.nan),
        "peak_mem_bytes": np.zeros(count, dtype=np.int64),
        "flops": flops[arch_idx],
        "params": params[arch_idx],
        "acts": archs["acts"][arch_idx].astype(np.int64),
        "attempts": np.ones(count, dtype=np.int64),
        "error": np.where(
            status == "failed", "Traceback (most recent call last):\nRuntimeError: CUDA error", ""
        ).astype(object),
        "job_id": np.array(
            [f"{1000 + s}_{a}" for s, a in zip(seed_idx, arch_idx, strict=True)], dtype=object
        ),
        "host": text("node01"),
        "gpu": text("synthetic"),
        "versions": text('{"anysweep": "0.1.0"}'),
        "recipe": text(o.recipe),
        "started": text(""),
        "finished": text(""),
        "spec": text(info.spec),
        "fingerprint": text(""),
    }
    curves = {name: np.empty((count, 0), dtype=np.float32) for name in schema.CURVES}
    if o.curves and done.any():
        decay = np.exp(-np.arange(o.epochs) / 3.0)
        rows = err[:, None] + (chance - err[:, None]) * decay[None, :]
        seconds = np.repeat(columns["train_seconds"][:, None] / o.epochs, o.epochs, axis=1)
        curves["test_top1_err"] = np.where(done[:, None], rows, np.nan).astype(np.float32)
        curves["epoch_seconds"] = np.where(done[:, None], seconds, np.nan).astype(np.float32)
    return schema.DatasetTable(info=info, columns=columns, curves=curves)


def _cell_results(table: schema.DatasetTable) -> list[schema.CellResult]:
    """The table's cells as the records a worker writes (curves only where present)."""
    names = [c for c in schema.CELL_COLUMNS if c in table.columns]
    rows = zip(*(table.columns[c].tolist() for c in names), strict=True)
    out = []
    for i, values in enumerate(rows):
        cell = schema.CellResult(dataset=table.info.name, **dict(zip(names, values, strict=True)))
        for name, matrix in table.curves.items():
            if matrix.shape[1] and np.isfinite(matrix[i]).any():
                cell.curves[name] = matrix[i].astype(np.float64)
        out.append(cell)
    return out
