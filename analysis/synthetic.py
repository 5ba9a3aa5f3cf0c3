"""Realistic synthetic results.h5 files with planted correlations, for tests and benchmarks.

Written through `schema.write_results`, so they are exactly what `anysweep collect` writes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    rho: float = 0.0  # planted Pearson correlation of true error with the reference's
    small: float = 0.0  # loading on the shared "small data" factor (subsets carry it too)
    base: float = 30.0  # mean error, percent
    spread: float = 4.0  # standard deviation of true error across architectures
    seed_noise: float = 1.0  # standard deviation of error between seeds
    coverage: float = 1.0  # share of architectures trained so far (a study still running)
    parent: str = ""
    subset_classes: tuple[int, ...] = ()


@dataclass(frozen=True)
class SyntheticTruth:
    """What was planted: per dataset, the correlation of true error with the reference's,
    the single-seed reliability, and the true (noise-free) error of every architecture."""

    reference: str
    rho: dict[str, float]
    reliability: dict[str, float]
    true_error: dict[str, np.ndarray] = field(repr=False)


def default_datasets(
    reference: str = "imagenet", subset_ks: Sequence[int] = (10, 50, 100, 500)
) -> list[SyntheticDataset]:
    """ImageNet, its class subsets, and the paper's kinds of target datasets."""
    rng = np.random.default_rng(12345)
    out = [
        SyntheticDataset(
            reference, 1000, 224, 1_281_167, 50_000, rho=1.0, base=38, spread=4, seed_noise=0.6
        )
    ]
    for k in subset_ks:
        alpha = 0.35 + 0.65 * np.log(k) / np.log(1000)
        out.append(
            SyntheticDataset(
                f"{reference}_k{k}",
                k,
                224,
                1300 * k,
                50 * k,
                rho=float(alpha),
                small=float(np.sqrt(1 - alpha**2)),
                base=20 + 0.02 * k,
                spread=3,
                seed_noise=1.2 - 0.1 * np.log10(k),
                parent=reference,
                subset_classes=tuple(sorted(rng.choice(1000, k, replace=False).tolist())),
            )
        )
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


def _latents(rng: np.random.Generator, archs: Mapping[str, np.ndarray], count: int) -> np.ndarray:
    """Orthonormal latent columns (sample mean 0, variance 1, zero sample correlation), the
    first two shaped by complexity and depth so that traits carry signal."""
    n = len(archs["id"])
    traits = np.stack([np.log(archs["flops"]), -np.log(archs["depths"].sum(axis=1))], axis=1)
    traits = (traits - traits.mean(0)) / traits.std(0)
    raw = rng.standard_normal((n, count))
    raw[:, 0] = 0.6 * traits[:, 0] + 0.8 * raw[:, 0]
    raw[:, 1] = 0.6 * traits[:, 1] + 0.8 * raw[:, 1]
    q, r = np.linalg.qr(raw - raw.mean(0))
    # QR may flip a column's sign; undo it so the trait directions hold.
    return q * np.sign(np.diagonal(r)) * np.sqrt(n)


def synthetic_results(
    path: str | Path,
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
    seed: int = 0,
) -> SyntheticTruth:
    """Write a results.h5 of architectures x datasets x seeds cells and return what was planted.

    True error of dataset d = base - spread * (rho z0 + small z1 + rest * u_d), with z0 the
    reference's factor, z1 a factor shared by small data (subsets and targets), all sample-
    orthonormal, so the true errors have exactly the planted Pearson correlation `rho` with
    the reference. Each seed adds independent noise; errors are rounded to whole test images.
    """
    if seeds < 1 or architectures < 3:
        raise ValueError(f"need seeds >= 1 and architectures >= 3, got {seeds} and {architectures}")
    specs = list(datasets) if datasets is not None else default_datasets(reference)
    if reference not in [s.name for s in specs]:
        raise ValueError(
            f"reference {reference!r} is not among the datasets {[s.name for s in specs]}"
        )
    rng = np.random.default_rng(seed)
    archs = _architectures(rng, architectures, flops_range)
    z = _latents(rng, archs, 2 + len(specs))
    truth, reliability, cells, infos = {}, {}, [], []
    recipe = json.dumps({"epochs": epochs, "batch_size": 128, "lr": 0.05, "optimizer": "sgd"})
    for d, spec in enumerate(specs):
        rest = np.sqrt(max(0.0, 1.0 - spec.rho**2 - spec.small**2))
        latent = spec.rho * z[:, 0] + spec.small * z[:, 1] + rest * z[:, 2 + d]
        true = spec.base - spec.spread * latent
        truth[spec.name] = true
        reliability[spec.name] = spec.spread**2 / (spec.spread**2 + spec.seed_noise**2)
        infos.append(
            schema.DatasetInfo(
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
            )
        )
        cells.extend(
            _cells(
                rng,
                spec,
                archs,
                true,
                seeds,
                missing,
                diverged,
                failed,
                epochs,
                curves,
                quantize,
                recipe,
            )
        )
    attrs = {
        "created": "2024-01-01T00:00:00",
        "study": "synthetic",
        "reference": reference,
        "software": json.dumps(
            {"anysweep": "0.1.0", "generator": "analysis.synthetic", "seed": seed}
        ),
    }
    schema.write_results(Path(path), architectures=archs, datasets=infos, cells=cells, attrs=attrs)
    rho = {s.name: float(np.corrcoef(truth[reference], truth[s.name])[0, 1]) for s in specs}
    return SyntheticTruth(reference=reference, rho=rho, reliability=reliability, true_error=truth)


def _cells(
    rng: np.random.Generator,
    spec: SyntheticDataset,
    archs: Mapping[str, np.ndarray],
    true: np.ndarray,
    seeds: int,
    missing: float,
    diverged: float,
    failed: float,
    epochs: int,
    curves: bool,
    quantize: bool,
    recipe: str,
) -> list[schema.CellResult]:
    n = len(true)
    ceiling = 100.0 * (1 - 1 / spec.classes)
    scale = (spec.resolution / 224) ** 2
    flops = (archs["flops"] * scale).astype(np.int64)
    # Training time follows the work done: images x epochs x flops, at a plausible GPU rate.
    seconds = epochs * spec.num_train * 3 * archs["flops"] * scale / 4e12 + 30
    out = []
    for s in range(seeds):
        err = np.clip(true + spec.seed_noise * rng.standard_normal(n), 0.0, ceiling)
        if quantize:
            err = np.round(err / 100 * spec.num_test) / spec.num_test * 100
        top5 = np.clip(err * 0.3, 0, 100)
        fate = rng.random(n)
        time = seconds * rng.lognormal(0, 0.05, n)
        trained = int(round(spec.coverage * n))
        for a in range(n):
            if fate[a] < missing or a >= trained:
                continue
            status = "done"
            if fate[a] < missing + failed:
                status = "failed"
            elif fate[a] < missing + failed + diverged:
                status = "diverged"
            cell = schema.CellResult(
                dataset=spec.name,
                arch_id=a,
                seed=s,
                status=status,
                epochs=epochs,
                flops=int(flops[a]),
                params=int(archs["params"][a]),
                acts=int(archs["acts"][a]),
                host="node01",
                gpu="synthetic",
                job_id=f"{1000 + s}_{a}",
                recipe=recipe,
                versions='{"anysweep": "0.1.0"}',
            )
            if status == "done":
                cell.top1_err, cell.top5_err = float(err[a]), float(top5[a])
                cell.best_top1_err, cell.best_epoch = float(err[a]), epochs - 1
                cell.train_seconds = float(time[a])
                if curves:
                    decay = np.exp(-np.arange(epochs) / 3.0)
                    cell.curves = {
                        "test_top1_err": err[a] + (ceiling - err[a]) * decay,
                        "epoch_seconds": np.full(epochs, time[a] / epochs),
                    }
            elif status == "diverged":
                cell.top1_err = cell.best_top1_err = ceiling
                cell.diverged_epoch = 1
                cell.epochs = 2
            else:
                cell.error = "Traceback (most recent call last):\nRuntimeError: CUDA error"
            out.append(cell)
    return out
