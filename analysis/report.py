"""The study's answer: `analyze` computes every table (correlations with intervals, noise
floor, subset curves, proxies, traits) and `write_report` writes CSV tables, PNG figures
and one self-contained HTML report."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.frame import METRICS, StudyResults
from analysis.proxy import rank_proxies, recommend, subset_curve
from analysis.result import Analysis
from analysis.stats import correlate, disattenuate, seed_reliability
from analysis.traits import top_agreement, trait_effects
from analysis.verdicts import verdict
from analysis.zerocost import analyze_scores


def _order(study: StudyResults, reference: str) -> tuple[list[str], dict[str, int]]:
    subsets = dict(sorted(study.subsets(reference).items(), key=lambda item: (item[1], item[0])))
    rest = [d for d in study.dataset_names if d != reference and d not in subsets]
    return [reference, *subsets, *rest], subsets


def _against(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    rows = table[(table["a"] == reference) | (table["b"] == reference)].copy()
    rows.insert(0, "dataset", np.where(rows["a"] == reference, rows["b"], rows["a"]))
    return rows.drop(columns=["a", "b"]).reset_index(drop=True)


def _dataset_table(
    study: StudyResults,
    names: list[str],
    reference: str,
    subsets: dict[str, int],
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
                "role": "reference"
                if name == reference
                else "subset"
                if name in subsets
                else "target",
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
    progress: bool = False,
) -> Analysis:
    """Compute every table of the report. Pearson and Spearman cover every pair of datasets;
    Kendall, whose resampling costs most, covers each dataset against the reference."""
    reference = reference or study.reference
    if reference not in study.datasets:
        raise ValueError(
            f"reference dataset {reference!r} is not in {study.path}; datasets there: "
            f"{study.dataset_names} (choose one with --reference NAME)"
        )
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method {method!r} cannot lead the analysis; valid: pearson, spearman")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if bootstrap < 0 or permutations < 0:
        raise ValueError(
            f"bootstrap and permutations must be >= 0, got {bootstrap} and {permutations}"
        )
    names, subsets = _order(study, reference)
    targets = [d for d in names if d != reference and d not in subsets] or list(subsets)
    errors = study.errors(metric)[names]
    steps = tqdm(total=6, desc="analyze", unit="step", disable=not progress)
    common = {
        "bootstrap": bootstrap,
        "permutations": permutations,
        "confidence": confidence,
        "seed": seed,
        "progress": progress,
    }
    correlations = {m: correlate(errors, method=m, **common) for m in ("pearson", "spearman")}
    steps.update(1)
    vs_reference = [(reference, d) for d in names if d != reference]
    correlations["kendall"] = correlate(errors, method="kendall", pairs=vs_reference, **common)
    steps.update(1)
    done = study.query(status="done")
    per_arch = (
        done.groupby(["dataset", "arch_id"], observed=True)
        .size()
        .groupby("dataset", observed=True)
        .mean()
    )
    noise_rows, reliability, replicates = [], {}, {}
    for name in names:
        summary, reps = seed_reliability(
            study.seed_errors(name, metric),
            method=method,
            bootstrap=bootstrap,
            confidence=confidence,
            seed=seed,
            seeds_averaged=float(per_arch.get(name, 1.0)),
        )
        noise_rows.append({"dataset": name, **summary})
        reliability[name], replicates[name] = summary["reliability"], reps
    noise = pd.DataFrame(noise_rows)
    steps.update(1)
    against = _against(disattenuate(correlations[method], reliability, replicates), reference)
    against["verdict"] = against.apply(verdict, axis=1)
    classes = study.datasets[reference].classes
    curve = subset_curve(
        correlations[method],
        reference=reference,
        reference_classes=classes,
        subsets=subsets,
        targets=targets if subsets else [],
    )
    ranked = rank_proxies(
        correlations[method],
        targets=targets,
        costs=study.gpu_hours(),
        reference=reference,
        subsets=subsets,
    )
    steps.update(1)
    traits = trait_effects(study.architectures, errors, method=method, **common)
    steps.update(1)
    agreement = top_agreement(errors, top_fraction)
    scores = analyze_scores(
        study,
        errors,
        metric=metric,
        bootstrap=bootstrap,
        permutations=permutations,
        confidence=confidence,
        seed=seed,
        progress=progress,
    )
    params = {
        "reference": reference,
        "metric": metric,
        "method": method,
        "bootstrap": bootstrap,
        "permutations": permutations,
        "confidence": confidence,
        "seed": seed,
        "top_fraction": top_fraction,
    }
    analysis = Analysis(
        path=str(study.path),
        reference=reference,
        metric=metric,
        method=method,
        bootstrap=bootstrap,
        permutations=permutations,
        confidence=confidence,
        seed=seed,
        top_fraction=top_fraction,
        targets=targets,
        subsets=subsets,
        errors=errors,
        datasets=_dataset_table(study, names, reference, subsets, errors, noise, metric),
        correlations=correlations,
        noise=noise,
        against=against,
        subset_curve=curve,
        proxies=ranked,
        recommendations=recommend(ranked, reference=reference),
        traits=traits,
        top_agreement=agreement,
        provenance=_provenance(study, params),
        scores=scores,
    )
    steps.update(1)
    steps.close()
    return analysis


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
        "proxies": analysis.proxies,
        "recommendations": analysis.recommendations,
        "traits": analysis.traits,
        "errors": analysis.errors.reset_index(),
        "top_agreement": analysis.top_agreement.rename_axis("dataset").reset_index(),
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

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = write_tables(analysis, out / "tables")
    figures = write_figures(analysis, out / "figures")
    html = out / "report.html"
    html.write_text(render(analysis, figures), encoding="utf-8")
    (out / "provenance.json").write_text(json.dumps(analysis.provenance, indent=2, default=str))
    return {"report": html, "tables": tables, "figures": figures}
