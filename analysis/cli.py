"""`anysweep analyze DIR`: correlations, noise floor, proxies, figures and the HTML report
of a study's results.h5. Imports neither torch nor ffcv."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from analysis.frame import DEFAULT_REFERENCE, METRICS, results_path

HEADLINE_METHODS = ("spearman", "pearson")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "study", metavar="DIR", help="a study folder holding results.h5, or a results.h5 file"
    )
    parser.add_argument(
        "--reference",
        metavar="NAME",
        default=None,
        help=f"dataset to compare against (default: the study's declared reference, else {DEFAULT_REFERENCE})",
    )
    parser.add_argument(
        "--out", metavar="DIR", default=None, help="where to write the report (default: DIR/report)"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples per interval (default 1000)",
    )
    parser.add_argument(
        "--permutations",
        type=int,
        default=1000,
        metavar="N",
        help="permutations per p-value (default 1000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of resampling (default 0)")
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default="top1_err",
        help="which error to compare (default top1_err)",
    )
    parser.add_argument(
        "--method",
        choices=HEADLINE_METHODS,
        default="spearman",
        help="correlation of the headline, proxies and traits (default spearman)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: Any, columns: list[str]) -> list[dict[str, Any]]:
    return [
        {k: _finite(v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame[columns].to_dict(orient="records")
    ]


def _open_study(file: Path) -> Any:
    """The study of results.h5, or one line saying why there is nothing to analyse: a file
    h5py cannot read, or one without a finished cell (a report of NaNs misleads)."""
    from analysis.frame import open_results

    try:
        study = open_results(file)
    except (OSError, KeyError) as exc:
        raise ValueError(
            f"{file} is not a readable results.h5 ({str(exc).splitlines()[0]}); run "
            f"'anysweep collect' in the study again to rebuild it from the cells' records"
        ) from exc
    done = study.query(status="done")
    if len(done) == 0:
        raise ValueError(
            f"{file} holds no finished cell ({len(study.cells)} cells, none done): nothing to "
            f"analyse; train first ('anysweep run' or 'anysweep launch'), then 'anysweep collect'"
        )
    return study


def run(args: argparse.Namespace) -> int:
    from analysis.report import analyze, write_report

    if args.bootstrap < 0 or args.permutations < 0:
        raise ValueError(
            f"--bootstrap and --permutations must be >= 0, got {args.bootstrap} and {args.permutations}"
        )
    file = results_path(args.study)
    out = Path(args.out) if args.out else file.parent / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # before any compute: the report has to go somewhere
        raise ValueError(
            f"cannot write the report to {out}: {exc}; choose another with --out DIR"
        ) from exc
    study = _open_study(file)
    analysis = analyze(
        study,
        reference=args.reference,
        metric=args.metric,
        method=args.method,
        bootstrap=args.bootstrap,
        permutations=args.permutations,
        seed=args.seed,
        progress=True,
    )
    files = write_report(analysis, out)
    headline = analysis.headline
    recs = analysis.recommendations
    if args.json:
        summary = {
            "results": str(file),
            "report": str(files["report"]),
            "report_bytes": Path(files["report"]).stat().st_size,
            "reference": analysis.reference,
            "method": analysis.method,
            "metric": analysis.metric,
            "headline_bootstrap": analysis.headline_bootstrap,
            "headline_mc_error": _finite(analysis.headline_mc_error),
            "headline": _records(
                headline,
                [
                    "dataset",
                    "n",
                    "r",
                    "lo",
                    "hi",
                    "p",
                    "ceiling",
                    "r_corrected",
                    "corrected_lo",
                    "corrected_hi",
                    "verdict",
                ],
            ),
            "recommendations": _records(
                recs,
                [
                    "target",
                    "found",
                    "recommended",
                    "recommended_r",
                    "recommended_gpu_hours",
                    "reference_r",
                    "saving",
                ],
            )
            if len(recs)
            else [],
            "tables": {k: str(v) for k, v in files["tables"].items()},
            "figures": {k: str(v) for k, v in files["figures"].items()},
        }
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{len(analysis.errors)} architectures, {len(analysis.datasets)} datasets; "
        f"{analysis.method} correlation of {analysis.metric} with {analysis.reference}:"
    )
    for row in headline.itertuples():
        print(f"  {row.dataset:<24} r={row.r:6.2f} [{row.lo:5.2f}, {row.hi:5.2f}]  {row.verdict}")
    print(
        f"  (interval ends: Monte-Carlo standard error at most {analysis.headline_mc_error:.3f}, "
        f"{analysis.headline_bootstrap:,} resamples)"
    )
    for row in recs[recs["found"]].itertuples() if len(recs) else ():
        print(
            f"  for {row.target}: use {row.recommended} (r={row.recommended_r:.2f}, "
            f"{row.recommended_gpu_hours:.3g} GPU-h per training)"
        )
    size = Path(files["report"]).stat().st_size / 1e6
    print(f"report: {files['report']} ({size:.1f} MB)")
    return 0
