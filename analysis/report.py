"""The study's answer: `analyze` computes every table (correlations with intervals, noise
floor, subset curves, proxies, traits) and `write_report` writes CSV tables, PNG figures
and one self-contained HTML report."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.controls import match_controls, subset_controls
from analysis.frame import METRICS, StudyResults
from analysis.headline import (
    HEADLINE_MC_ERROR,
    Headline,
    headline,
    kendall_permutations,
    kendall_resamples,
    largest_mc_error,
)
from analysis.proxy import rank_proxies, recommend, subset_curve
from analysis.result import Analysis
from analysis.stats import Correlations, bootstrap_counts, correlate, disattenuate
from analysis.traits import top_agreement, top_chance, top_overlap, trait_effects
from analysis.verdicts import verdict
from analysis.zerocost import analyze_scores


def _order(study: StudyResults, reference: str) -> tuple[list[str], dict[str, int], dict[str, int]]:
    """Datasets in report order (reference, subsets by k, controls by images, the rest),
    the subsets with their k and the size controls with their training images."""
    subsets = dict(sorted(study.subsets(reference).items(), key=lambda item: (item[1], item[0])))
    controls = dict(sorted(study.controls(reference).items(), key=lambda item: (item[1], item[0])))
    rest = [d for d in study.dataset_names if d not in (reference, *subsets, *controls)]
    return [reference, *subsets, *controls, *rest], subsets, controls


def _against(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    rows = table[(table["a"] == reference) | (table["b"] == reference)].copy()
    rows.insert(0, "dataset", np.where(rows["a"] == reference, rows["b"], rows["a"]))
    return rows.drop(columns=["a", "b"]).reset_index(drop=True)


def _dataset_table(
    study: StudyResults,
    names: list[str],
    reference: str,
    subsets: dict[str, int],
    controls: dict[str, int],
    errors: pd.DataFrame,
    noise: pd.DataFrame,
    metric: str,
) -> pd.DataFrame:
    cells = study.cells
    counts = cells.groupby(["dataset", "status"], observed=False).size().unstack(fill_value=0)
    hours = study.gpu_hours()
    seeds = np.unique(cells["seed"]) if len(cells) else np.array([])
    rows = []
    for name in names:
        info = study.datasets[name]
        col = errors[name].dropna()
        best = col.idxmin() if len(col) else None
        done = int(counts.loc[name, "done"]) if name in counts.index else 0
        rows.append(
            {
                "dataset": name,
                "role": _role(name, reference, subsets, controls),
                "classes": info.classes,
                "resolution": info.resolution,
                "num_train": info.num_train,
                "num_test": info.num_test,
                "architectures": len(col),
                "done": done,
                "diverged": int(counts.loc[name, "diverged"]) if name in counts.index else 0,
                "failed": int(counts.loc[name, "failed"]) if name in counts.index else 0,
                "missing": len(study.architectures) * len(seeds)
                - (int(counts.loc[name].sum()) if name in counts.index else 0),
                f"mean_{metric}": col.mean(),
                f"median_{metric}": col.median(),
                f"best_{metric}": col.min(),
                "best_arch": best,
                "best_arch_name": study.architectures.loc[best, "arch_name"]
                if best is not None
                else "",
                "gpu_hours": hours.get(name, np.nan),
                "total_gpu_hours": hours.get(name, np.nan) * done,
                "reliability": noise.set_index("dataset")["reliability"].get(name, np.nan),
            }
        )
    return pd.DataFrame(rows)


def _role(name: str, reference: str, subsets: dict[str, int], controls: dict[str, int]) -> str:
    if name == reference:
        return "reference"
    return "subset" if name in subsets else "control" if name in controls else "target"


def _provenance(study: StudyResults, params: dict[str, Any]) -> dict[str, Any]:
    path = Path(study.path) if study.path else None
    digest = ""
    if path is not None:
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        digest = sha.hexdigest()
    cells = study.cells

    def distinct(column: str) -> dict[str, int]:
        values = cells[column].astype(str)
        return values[values != ""].value_counts().head(10).to_dict()

    try:
        from importlib.metadata import version

        anysweep = version("anysweep")
    except Exception:  # not installed as a distribution: the source tree runs it
        anysweep = "source tree"
    return {
        "results": str(path) if path else "",
        "sha256": digest,
        "size_bytes": path.stat().st_size if path else 0,
        "file_attributes": {k: str(v) for k, v in study.attrs.items()},
        "recipes": {name: info.recipe for name, info in study.datasets.items()},
        "hosts": distinct("host"),
        "gpus": distinct("gpu"),
        "versions": distinct("versions"),
        "job_ids": int((cells["job_id"].astype(str) != "").sum()),
        "analysis": params,
        "analyzed": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "software": {
            "anysweep": anysweep,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scipy": __import__("scipy").__version__,
        },
    }


def _check(study: StudyResults, reference: str, metric: str, method: str, resamples: int) -> None:
    if reference not in study.datasets:
        raise ValueError(
            f"reference dataset {reference!r} is not in {study.path}; datasets there: "
            f"{study.dataset_names} (choose one with --reference NAME)"
        )
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method {method!r} cannot lead the analysis; valid: pearson, spearman")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if resamples < 0:
        raise ValueError(f"bootstrap and permutations must be >= 0, got {resamples}")


class _Settings(TypedDict):
    """The analysis's parameters, as Analysis and the provenance record them."""

    reference: str
    metric: str
    method: str
    bootstrap: int
    permutations: int
    confidence: float
    seed: int
    top_fraction: float


class _Common(TypedDict):
    """What every table's correlations share besides the draws."""

    permutations: int
    confidence: float
    seed: int


def analyze(
    study: StudyResults,
    *,
    reference: str | None = None,
    metric: str = "top1_err",
    method: str = "spearman",
    bootstrap: int = 1000,
    permutations: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    top_fraction: float = 0.1,
    headline_error: float = HEADLINE_MC_ERROR,
    progress: bool = False,
) -> Analysis:
    """Compute every table of the report. Pearson and Spearman cover every pair of datasets
    on `bootstrap` resamples; the headline (each dataset against the reference, with noise
    ceilings and corrected correlations) extends the same draws until the Monte-Carlo error
    of its interval ends is at most `headline_error`; Kendall, whose resampling costs
    most, covers each dataset against the reference on the first `kendall_resamples` draws."""
    reference = reference or study.reference
    _check(study, reference, metric, method, min(bootstrap, permutations))
    settings = _Settings(
        reference=reference,
        metric=metric,
        method=method,
        bootstrap=bootstrap,
        permutations=permutations,
        confidence=confidence,
        seed=seed,
        top_fraction=top_fraction,
    )
    names, subsets, controls = _order(study, reference)
    targets = [d for d in names if d not in (reference, *subsets, *controls)] or list(subsets)
    errors = study.errors(metric)[names]
    steps = tqdm(total=5, desc="analyze", unit="step", disable=not progress)
    rng = np.random.default_rng(seed)
    counts = bootstrap_counts(rng, len(errors), bootstrap)
    common = _Common(permutations=permutations, confidence=confidence, seed=seed)
    correlations = {
        m: correlate(errors, method=m, counts=counts, progress=progress, **common)
        for m in ("pearson", "spearman")
    }
    correlations["kendall"], kendall_null = _kendall(errors, reference, counts, common)
    steps.update(1)
    head = headline(
        study,
        errors,
        correlations[method],
        reference=reference,
        targets=targets,
        counts=counts,
        rng=rng,
        metric=metric,
        target_error=headline_error,
    )
    steps.update(1)
    tables = _tables(
        study, head, correlations[method], reference, names, subsets, controls, targets
    )
    as_trained = {c: study.as_trained(c) for c in ("flops", "params")}
    tables["traits"] = trait_effects(
        study.architectures, errors, as_trained=as_trained, method=method, counts=counts, **common
    )
    steps.update(1)
    scores = analyze_scores(
        study,
        errors,
        metric=metric,
        bootstrap=bootstrap,
        counts=counts,
        progress=progress,
        **common,
    )
    steps.update(1)
    resampling = _resampling(head, correlations, method, settings, headline_error, kendall_null)
    analysis = Analysis(
        path=str(study.path),
        **settings,
        targets=targets,
        subsets=subsets,
        controls=controls,
        errors=errors,
        datasets=_dataset_table(
            study, names, reference, subsets, controls, errors, head.noise, metric
        ),
        correlations=correlations,
        noise=head.noise,
        provenance=_provenance(study, {**settings, **_counts(resampling)}),
        **_top(errors, top_fraction),
        **resampling,
        **tables,
        scores=scores,
    )
    steps.update(1)
    steps.close()
    return analysis


def _kendall(
    errors: pd.DataFrame, reference: str, counts: np.ndarray, common: _Common
) -> tuple[Correlations, int]:
    """Kendall's tau of each dataset against the reference, on the first resamples and with
    the permutations its cost allows (kendall_resamples, kendall_permutations)."""
    pairs = [(reference, d) for d in errors.columns if d != reference]
    resamples = kendall_resamples(len(errors), len(pairs), len(counts))
    permutations = kendall_permutations(len(errors), len(pairs), common["permutations"])
    table = correlate(
        errors,
        method="kendall",
        pairs=pairs,
        counts=counts[:resamples],
        permutations=permutations,
        confidence=common["confidence"],
        seed=common["seed"],
    )
    return table, permutations


def _resampling(
    head: Headline,
    correlations: dict[str, Correlations],
    method: str,
    settings: _Settings,
    headline_error: float,
    kendall_permutations: int,
) -> dict[str, Any]:
    """How many resamples each table used and the Monte-Carlo error of its interval ends."""
    confidence = settings["confidence"]
    kendall = correlations["kendall"]
    return {
        "headline_bootstrap": len(head.counts),
        "headline_target": headline_error,
        "kendall_bootstrap": kendall.samples.shape[1],
        "kendall_permutations": kendall_permutations,
        "headline_mc_error": head.mc_error,
        "corrected_mc_error": head.corrected_mc_error,
        "mc_error": largest_mc_error(correlations[method].samples, confidence),
        "kendall_mc_error": largest_mc_error(kendall.samples, confidence),
    }


def _counts(resampling: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resampling.items() if not k.endswith("mc_error")}


def _top(errors: pd.DataFrame, fraction: float) -> dict[str, Any]:
    overlap = top_overlap(errors, fraction)
    return {
        "top_agreement": top_agreement(errors, fraction),
        "top_overlap": overlap,
        "top_k": top_chance(overlap),
    }


def _tables(
    study: StudyResults,
    head: Headline,
    table: Correlations,
    reference: str,
    names: list[str],
    subsets: dict[str, int],
    controls: dict[str, int],
    targets: list[str],
) -> dict[str, pd.DataFrame]:
    """The tables drawn from the headline and the matrix: against, the subset curve with
    its reliabilities and corrections, subsets against their controls, proxies."""
    against = _against(head.against, reference)
    against["verdict"] = against.apply(verdict, axis=1)
    bootstrap = table.samples.shape[1]
    prefix = {name: reps[:bootstrap] for name, reps in head.replicates.items()}
    corrected = disattenuate(table, head.reliability, prefix)
    curve_targets = targets if subsets else []
    curve = subset_curve(
        table,
        reference=reference,
        reference_classes=study.datasets[reference].classes,
        subsets=subsets,
        targets=curve_targets,
        corrected=corrected,
        reliability=head.reliability,
    )
    images = {name: study.datasets[name].num_train for name in names}
    matches = match_controls({s: images[s] for s in subsets}, controls)
    paired = subset_controls(
        table,
        reference=reference,
        targets=curve_targets,
        subsets=subsets,
        matches=matches,
        images=images,
    )
    ranked = rank_proxies(
        table,
        targets=targets,
        costs=study.gpu_hours(),
        reference=reference,
        subsets=subsets,
        controls=controls,
    )
    return {
        "against": against,
        "subset_curve": curve,
        "subset_controls": paired,
        "proxies": ranked,
        "recommendations": recommend(ranked, reference=reference),
    }


def write_tables(analysis: Analysis, folder: Path) -> dict[str, Path]:
    """Every table of the analysis as CSV in `folder`; returns name -> path."""
    from analysis.zerocost_report import score_tables

    folder.mkdir(parents=True, exist_ok=True)
    tables = {
        "datasets": analysis.datasets,
        "headline": analysis.headline,
        "against_reference": analysis.against,
        "noise_floor": analysis.noise,
        "subset_curves": analysis.subset_curve,
        "subset_controls": analysis.subset_controls,
        "proxies": analysis.proxies,
        "recommendations": analysis.recommendations,
        "traits": analysis.traits,
        "errors": analysis.errors.reset_index(),
        "top_agreement": analysis.top_agreement.rename_axis("dataset").reset_index(),
        "top_overlap": analysis.top_overlap,
    }
    for method, result in analysis.correlations.items():
        tables[f"correlations_{method}"] = result.table
    tables.update(score_tables(analysis.scores))
    tables[f"matrix_{analysis.method}"] = (
        analysis.correlations[analysis.method].matrix("r").rename_axis("dataset").reset_index()
    )
    paths = {}
    for name, table in tables.items():
        paths[name] = folder / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    return paths


def write_report(analysis: Analysis, out: str | Path) -> dict[str, Any]:
    """Write tables/ (CSV), figures/ (PNG) and report.html into `out`; returns their paths."""
    from analysis.figures import write_figures
    from analysis.html import render
    from analysis.layout import plan

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = write_tables(analysis, out / "tables")
    layout = plan(analysis)  # what the figures and the page show at this study's size
    figures = write_figures(analysis, out / "figures", layout)
    html = out / "report.html"
    html.write_text(render(analysis, figures, layout), encoding="utf-8")
    (out / "provenance.json").write_text(json.dumps(analysis.provenance, indent=2, default=str))
    return {"report": html, "tables": tables, "figures": figures}
