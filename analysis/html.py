"""The report as one self-contained HTML page: inline CSS, figures embedded as base64 PNG,
no scripts and no external resources, readable top to bottom."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis import html_layout as scaled
from analysis.layout import Layout, plan
from analysis.traits import FDR_METHOD
from analysis.verdicts import NEGATIVE, POSITIVE, RULE, UNCLEAR

if TYPE_CHECKING:
    from analysis.result import Analysis

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1120px;margin:0 auto;
padding:24px 32px 64px;color:#1d2430;line-height:1.5;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:2px solid #e3e7ee;
padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}.meta{color:#5b6472;font-size:13px}
nav{background:#f5f7fa;border:1px solid #e3e7ee;border-radius:6px;padding:8px 14px;margin:16px 0;font-size:14px}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px;width:auto}
th,td{padding:4px 9px;border-bottom:1px solid #e6e9ef;text-align:right;vertical-align:top}
th{background:#f0f3f7;text-align:center}td.text,th.text{text-align:left}
tr:nth-child(even) td{background:#fafbfc}figure{margin:12px 0 20px}
figure img{max-width:100%;border:1px solid #eceff3}figcaption{font-size:13px;color:#5b6472}
.key{background:#eef5ff;border-left:4px solid #1f5fa8;padding:10px 14px;margin:12px 0}
.good{color:#1a7f37}.bad{color:#b42318}.muted{color:#6b7280}code{font-size:12px}
details{margin:6px 0}summary{cursor:pointer;color:#1f5fa8}
"""


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    # Adding 0.0 turns a rounded -0.0 into 0.0, so tiny negatives do not print as "-0.00".
    return f"{round(float(value), digits) + 0.0:.{digits}f}"


def _p(value: float, floor: float = 0.0) -> str:
    """A p-value; at the smallest value the permutations can give, say it is at most that."""
    if not np.isfinite(value):
        return "–"
    if value <= floor * (1 + 1e-9):
        return f"≤{value:.3f}" if value >= 0.001 else "<0.001"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _floor(a: Analysis, permutations: int | None = None) -> float:
    """The smallest p-value a permutation test can give (for Kendall: its own count)."""
    count = a.permutations if permutations is None else permutations
    return 2 / (count + 1) if count else 0.0


def _end(value: float) -> str:
    if isinstance(value, (float, np.floating)) and np.isinf(value):
        return "∞" if value > 0 else "−∞"
    return _num(value)


def _ci(lo: float, hi: float) -> str:
    """An interval; an unbounded end (a corrected r whose ceiling can be 0) shows as ∞."""
    if np.isnan(lo) or np.isnan(hi):
        return "–"
    return f"[{_end(lo)}, {_end(hi)}]"


def _cell(text: str, value: Any = None, cls: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if value is not None and isinstance(value, (float, int, np.floating, np.integer)):
        attrs += f' data-value="{float(value)!r}"'
    return f"<td{attrs}>{html.escape(text)}</td>"


def _table(
    ident: str, headers: Sequence[str], rows: Sequence[Sequence[str]], text_cols: int = 1
) -> str:
    head = "".join(
        f'<th class="text">{html.escape(h)}</th>' if i < text_cols else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return f'<table id="{ident}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(path: Path | None, caption: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(caption.split(".")[0])
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _studied(a: Analysis) -> str:
    d = a.datasets
    archs = len(a.errors)
    seeds = int(a.noise["seeds"].max()) if len(a.noise) else 0
    subsets = ", ".join(f"{n} (k={k})" for n, k in a.subsets.items()) or "none"
    if a.controls:
        subsets += ", its size-matched controls " + ", ".join(
            f"{n} ({k:,} images)" for n, k in a.controls.items()
        )
    text = (
        f"<p>{archs:,} architectures were trained on {len(d)} datasets with up to {seeds} seed(s) each: "
        f"the reference <b>{html.escape(a.reference)}</b>, its class subsets {html.escape(subsets)}, "
        f"and {len(a.targets)} target dataset(s): {html.escape(', '.join(a.targets))}. "
        f"Of the cells, {int(d['done'].sum()):,} finished, {int(d['diverged'].sum()):,} diverged, "
        f"{int(d['failed'].sum()):,} failed and {int(d['missing'].sum()):,} are missing; "
        f"{_num(float(d['total_gpu_hours'].sum()), 1)} GPU-hours of training went into them. "
        f"Error is <code>{html.escape(a.metric)}</code> (test set, %, mean over seeds of finished cells).</p>"
    )
    rows = [
        [
            _cell(r.dataset, cls="text"),
            _cell(r.role, cls="text"),
            _cell(_num(r.classes), r.classes),
            _cell(_num(r.resolution), r.resolution),
            _cell(_num(r.num_train), r.num_train),
            _cell(_num(r.architectures), r.architectures),
            _cell(_num(r.done), r.done),
            _cell(_num(r.diverged), r.diverged),
            _cell(_num(r.failed), r.failed),
            _cell(_num(r.missing), r.missing),
        ]
        for r in d.itertuples()
    ]
    headers = [
        "dataset",
        "role",
        "classes",
        "px",
        "train images",
        "architectures",
        "done",
        "diverged",
        "failed",
        "missing",
    ]
    return text + _table("studied", headers, rows, text_cols=2)


def _headline(a: Analysis, figures: dict[str, Path], layout: Layout) -> str:
    h = a.headline
    rows = []
    for r in scaled.rows(h, "r", layout).itertuples():
        cls = "bad" if r.r < 0 and r.hi < 0 else "good" if r.lo > 0 else "muted"
        rows.append(
            [
                _cell(r.dataset, cls="text"),
                _cell(_num(r.n), r.n),
                _cell(_num(r.r), r.r, cls),
                _cell(_ci(r.lo, r.hi)),
                _cell(_p(r.p, _floor(a)), r.p),
                _cell(_num(r.ceiling), r.ceiling),
                _cell(_num(r.r_corrected), r.r_corrected),
                _cell(_ci(r.corrected_lo, r.corrected_hi)),
                _cell(r.verdict, cls="text"),
            ]
        )
    conf = f"{a.confidence:.0%}"
    headers = [
        "target",
        "architectures",
        "r",
        f"{conf} interval",
        "p",
        "noise ceiling",
        "corrected r",
        f"{conf} interval",
        "reading",
    ]
    best = h.loc[h["r"].idxmax()] if h["r"].notna().any() else None
    worst = h.loc[h["r"].idxmin()] if h["r"].notna().any() else None
    summary = ""
    if best is not None and worst is not None:
        sign = h["verdict"].str.split(";").str[0]
        summary = (
            f'<div class="key">Across {len(h)} target dataset(s), the {a.method} correlation of error with '
            f"{html.escape(a.reference)} ranges from {_num(worst.r)} ({html.escape(worst.dataset)}) to "
            f"{_num(best.r)} ({html.escape(best.dataset)}): {int((sign == POSITIVE).sum())} clearly positive, "
            f"{int((sign == NEGATIVE).sum())} clearly negative, {int((sign == UNCLEAR).sum())} with no clear "
            "relation.</div>"
        )
    return (
        summary
        + _headline_note(a)
        + _table("headline", headers, rows)
        + scaled.rows_note(len(h), "r", "targets", "headline.csv", layout)
        + _figure(figures.get("scatter"), scaled.scatter_caption(a, layout))
    )


def _headline_note(a: Analysis) -> str:
    """What the headline's columns are, and the rule its readings follow."""
    conf = f"{a.confidence:.0%}"
    return (
        f"<p>r is the {a.method} correlation of the architectures' errors (each the mean over its seeds) on "
        f"{html.escape(a.reference)} and on the target, with a bootstrap {conf} percentile interval "
        f"(architectures resampled {a.headline_bootstrap:,} times; the Monte-Carlo standard error of these "
        f"interval ends is at most {_num(a.headline_mc_error, 3)}) and a two-sided permutation p-value "
        f"({a.permutations:,} permutations). The <i>noise ceiling</i> is sqrt(rel_ref x rel_target), with "
        "rel the reliability of a dataset's mean over seeds (see the noise floor): what r is expected to "
        "reach at most if the two datasets' noise-free rankings agreed perfectly. One study's r can exceed "
        "it by sampling error. <i>Corrected r</i> is r divided by the ceiling (Spearman's correction for "
        "attenuation), not capped: a value above 1 is sampling error; where the ceiling is 0 it is "
        "undefined, and an interval that reaches resamples with ceiling 0 is unbounded (∞).</p>"
        f"<p>{RULE}</p>"
    )


def _methods(a: Analysis, layout: Layout) -> str:
    rows = []
    for r in scaled.rows(a.against, "r", layout).itertuples():
        cells = [_cell(r.dataset, cls="text")]
        for method in ("pearson", "spearman", "kendall"):
            # The headline's measure shows the headline's interval (its longer resampling).
            row = (
                r._asdict()
                if method == a.method
                else a.correlations[method].get(a.reference, r.dataset)
            )
            count = a.kendall_permutations if method == "kendall" else None
            cells += [
                _cell(_num(row["r"]), row["r"]),
                _cell(_ci(row["lo"], row["hi"])),
                _cell(_p(row["p"], _floor(a, count)), row["p"]),
            ]
        rows.append(cells)
    headers = ["dataset"] + [
        f"{m} {c}" for m in ("Pearson", "Spearman", "Kendall") for c in ("r", "interval", "p")
    ]
    other = "Spearman" if a.method == "pearson" else "Pearson"
    kendall = (
        "on the same resamples"
        if a.kendall_bootstrap == a.bootstrap
        else f"on the first {a.kendall_bootstrap:,} of them (its cost grows as about n<sup>1.5</sup> "
        "per resample and pair)"
    )
    return (
        f"<p>Every dataset against {html.escape(a.reference)} by all three measures. Pearson and Spearman "
        "were computed for every pair of datasets (see the heatmap and tables/correlations_*.csv) on "
        f"{a.bootstrap:,} resamples, the first {a.bootstrap:,} of the headline's (the {a.method} column "
        f"here is the headline's); Kendall's tau, whose resampling costs the most, covers the pairs "
        f"with the reference {kendall}, with {a.kendall_permutations:,} permutations for its "
        "p-values. The Monte-Carlo standard "
        f"error of an interval end is at most {_num(a.mc_error, 3)} for the tables on "
        f"{a.bootstrap:,} resamples ({other}, the heatmap, the subset curve, proxies, traits) and "
        f"{_num(a.kendall_mc_error, 3)} for Kendall's: their second decimal can move with the seed "
        "of the resampling.</p>"
        + _table("methods", headers, rows)
        + scaled.rows_note(len(a.against), "r", "datasets", "against_reference.csv", layout)
    )


def _noise(a: Analysis, layout: Layout) -> str:
    rows = [
        [
            _cell(r.dataset, cls="text"),
            _cell(_num(r.seeds), r.seeds),
            _cell(_num(r.n), r.n),
            _cell(_num(r.seed_r), r.seed_r),
            _cell(_ci(r.seed_lo, r.seed_hi)),
            _cell(_num(r.seeds_averaged, 1), r.seeds_averaged),
            _cell(_num(r.reliability), r.reliability),
            _cell(_ci(r.reliability_lo, r.reliability_hi)),
        ]
        for r in scaled.rows(a.noise, "reliability", layout).itertuples()
    ]
    headers = [
        "dataset",
        "seeds",
        "architectures with all seeds",
        "seed-to-seed r",
        "interval",
        "seeds per mean",
        "reliability of the mean",
        "interval",
    ]
    return (
        "<p>How well a dataset ranks architectures the same way twice: the correlation between seeds "
        "(mean over pairs of seeds, over the architectures that have every seed), and the reliability "
        "of the per-architecture mean over seeds that the correlations use (Spearman-Brown; a "
        "seed-to-seed r at or below 0 means no repeatable signal, reliability 0). The seed-to-seed r "
        "of one dataset is not a bound on its correlation with another: the headline correlates means "
        "over seeds, and for two datasets whose noise-free rankings agree perfectly r is expected near "
        "sqrt(rel_a x rel_b), the noise ceiling. Intervals use the headline's resamples. With one "
        "seed the noise floor cannot be measured.</p>"
        + _table("noise", headers, rows)
        + scaled.rows_note(len(a.noise), "reliability", "datasets", "noise_floor.csv", layout)
    )


def _pivot_table(
    ident: str, frame: pd.DataFrame, index: str, columns: str, fmt: Callable[[pd.Series], str]
) -> str:
    keys = list(dict.fromkeys(frame[columns]))
    rows = []
    for name, group in frame.groupby(index, sort=False):
        by = {row[columns]: row for _, row in group.iterrows()}
        rows.append(
            [_cell(str(name), cls="text")]
            + [_cell(fmt(by[k]), by[k]["r"]) if k in by else _cell("–") for k in keys]
        )
    return _table(ident, [index] + [str(k) for k in keys], rows)


def _proxies(a: Analysis, layout: Layout) -> str:
    rec = a.recommendations
    rows = []
    for r in scaled.rows(rec, "best_r", layout).itertuples():
        if not r.found:
            rows.append(
                [_cell(r.target, cls="text"), _cell("none: train on it", cls="text bad")]
                + [_cell("–")] * 3
                + [
                    _cell(r.best, cls="text"),
                    _cell(_num(r.best_r), r.best_r),
                    _cell(_num(r.reference_r), r.reference_r),
                    _cell(_num(r.reference_gpu_hours, 3), r.reference_gpu_hours),
                    _cell("–"),
                ]
            )
            continue
        rows.append(
            [
                _cell(r.target, cls="text"),
                _cell(r.recommended, cls="text"),
                _cell(_num(r.recommended_r), r.recommended_r),
                _cell(_ci(r.recommended_lo, r.recommended_hi)),
                _cell(_num(r.recommended_gpu_hours, 3), r.recommended_gpu_hours),
                _cell(r.best, cls="text"),
                _cell(_num(r.best_r), r.best_r),
                _cell(_num(r.reference_r), r.reference_r),
                _cell(_num(r.reference_gpu_hours, 3), r.reference_gpu_hours),
                _cell(f"{_num(r.saving, 1)}x", r.saving),
            ]
        )
    headers = [
        "target",
        "use instead",
        "r",
        "interval",
        "GPU-h per training",
        "best proxy",
        "best r",
        f"{a.reference} r",
        f"{a.reference} GPU-h",
        "cheaper by",
    ]
    return (
        "<p>For each target, every other dataset is a candidate proxy. The recommendation is the "
        "cheapest candidate (measured GPU-hours per training) whose own correlation with the target is "
        "clearly positive and that is <i>not distinguishable from the best at this sample size</i>: the "
        f"{a.confidence:.0%} interval of r(best) - r(candidate), over the same resamples of architectures "
        "for both (a paired bootstrap), reaches 0. That is not evidence that the two are equally good, "
        "only that this study cannot tell them apart. Where even the best candidate's interval reaches "
        "0, no dataset of the study ranks architectures like the target. All candidates, with the "
        "difference and its interval, are in tables/proxies.csv.</p>"
        + _table("proxies", headers, rows, text_cols=2)
        + scaled.rows_note(len(rec), "best r", "targets", "recommendations.csv", layout)
    )


def _traits(a: Analysis, figures: dict[str, Path], layout: Layout) -> str:
    table = _pivot_table(
        "traits",
        a.traits,
        "dataset",
        "label",
        lambda r: f"{r['r']:.2f}{'*' if r['q'] < 0.05 else ''}",
    )
    at_224 = sorted(set(a.traits.loc[a.traits["counted"] == "224 px", "dataset"]))
    counted = (
        f" For {html.escape(', '.join(at_224))} results.h5 has no as-trained counts: there they are "
        "counted at 224 px with 1,000 classes."
        if at_224
        else ""
    )
    return (
        f"<p>{a.method.capitalize()} correlation of each dataset's error with each architecture trait; "
        "a negative value means more of the trait goes with lower error. flops and params are those of "
        "the model as trained on each dataset (its resolution and number of classes)."
        f"{counted} * marks a false discovery rate below 5 % ({FDR_METHOD} over all "
        f"{int(a.traits['p'].notna().sum())} cells of the table, q &lt; 0.05; valid when the tests are "
        "independent or positively dependent). tables/traits.csv has p and q.</p>"
        + _figure(figures.get("traits"), "Dots: correlation; bars: intervals.")
        + table
        + _figure(figures.get("top_agreement"), scaled.agreement_caption(a, layout))
        + f"<p>{html.escape(_top_caption(a))}</p>"
    )


def _top_caption(a: Analysis) -> str:
    k = a.top_k
    if not k:
        return f"Share of the best {a.top_fraction:.0%} architectures two datasets have in common."
    n, top = int(k["n"]), int(k["k"])
    text = (
        f"Top-{a.top_fraction:.0%} agreement compares the best k = {top} of n = {n} architectures "
        "of each dataset. If the rankings were unrelated the share would be k/n = "
        f"{k['chance']:.3f} on average (exact; tables/top_overlap.csv has each pair's n, k and the "
        "hypergeometric p-value of its overlap)."
    )
    if k.get("too_few"):
        steps = ", ".join(f"{i / top:.2g}" for i in range(top + 1))
        text += (
            f" With k = {top} a share can only be {steps}: too few architectures for the share to "
            "say much."
        )
    return text


def _per_dataset(a: Analysis, figures: dict[str, Path], layout: Layout) -> str:
    m = a.metric
    rows = [
        [
            _cell(r["dataset"], cls="text"),
            _cell(_num(r[f"mean_{m}"]), r[f"mean_{m}"]),
            _cell(_num(r[f"median_{m}"]), r[f"median_{m}"]),
            _cell(_num(r[f"best_{m}"]), r[f"best_{m}"]),
            _cell(str(r["best_arch"]) if pd.notna(r["best_arch"]) else "–"),
            _cell(str(r["best_arch_name"]), cls="text"),
            _cell(_num(r["gpu_hours"], 3), r["gpu_hours"]),
            _cell(_num(r["total_gpu_hours"], 1), r["total_gpu_hours"]),
        ]
        for _, r in a.datasets.iterrows()
    ]
    headers = [
        "dataset",
        "mean error",
        "median error",
        "best error",
        "best architecture",
        "its name",
        "GPU-h per training",
        "GPU-h in total",
    ]
    return _table("datasets", headers, rows) + _figure(
        figures.get("edf"), scaled.edf_caption(layout)
    )


def _provenance(a: Analysis) -> str:
    p = a.provenance
    items = [
        ("results file", p.get("results", "")),
        ("sha256", p.get("sha256", "")),
        ("analyzed", p.get("analyzed", "")),
        ("parameters", json.dumps(p.get("analysis", {}))),
        ("software", json.dumps(p.get("software", {}))),
        ("hosts", json.dumps(p.get("hosts", {}))),
        ("GPUs", json.dumps(p.get("gpus", {}))),
        ("cells with a job id", str(p.get("job_ids", 0))),
    ]
    items += [(f"file attribute {k}", v) for k, v in p.get("file_attributes", {}).items()]
    rows = [
        [_cell(k, cls="text"), f'<td class="text"><code>{html.escape(str(v))}</code></td>']
        for k, v in items
    ]
    recipes = "".join(
        f"<details><summary>recipe of {html.escape(n)}</summary><pre>{html.escape(r)}</pre></details>"
        for n, r in p.get("recipes", {}).items()
    )
    return _table("provenance", ["what", "value"], rows, text_cols=2) + recipes


SECTIONS = (
    ("studied", "What was studied"),
    ("headline", "Headline: does the ranking transfer?"),
    ("methods", "Three measures against the reference"),
    ("noise", "Noise floor"),
    ("subsets", "Fewer classes of the reference"),
    ("proxies", "What to use instead"),
    ("traits", "Which traits predict error"),
    ("datasets", "Per-dataset tables"),
    ("method", "Method"),
    ("provenance", "Provenance"),
)


def render(a: Analysis, figures: dict[str, Path], layout: Layout | None = None) -> str:
    """The whole report as one HTML string, as `layout` (default: `plan`) shapes it."""
    from analysis import html_sections

    layout = layout or plan(a)
    bodies = {
        "studied": _studied(a),
        "headline": _headline(a, figures, layout),
        "methods": _methods(a, layout),
        "noise": _noise(a, layout),
        "subsets": html_sections.subsets(a, figures, layout),
        "proxies": _proxies(a, layout),
        "traits": _traits(a, figures, layout),
        "datasets": _per_dataset(a, figures, layout),
        "method": html_sections.method(a),
        "provenance": _provenance(a),
    }
    bodies["methods"] += _figure(figures.get("heatmap"), scaled.heatmap_caption(a, layout))
    shown = list(SECTIONS)
    if a.scores is not None:  # training-free scores: a section of their own, after proxies
        from analysis.zerocost_report import KEY, TITLE, score_section

        bodies[KEY] = score_section(a.scores, figures, _floor(a))
        shown.insert([k for k, _ in shown].index("proxies") + 1, (KEY, TITLE))
    nav = "".join(f'<a href="#s-{key}">{html.escape(title)}</a>' for key, title in shown)
    sections = "".join(
        f'<section id="s-{key}"><h2>{html.escape(title)}</h2>{bodies[key]}</section>'
        for key, title in shown
    )
    title = f"Does the {a.reference} ranking transfer? anysweep report"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
        f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(a.path)} · analyzed "
        f"{html.escape(str(a.provenance.get('analyzed', '')))}</p><nav>{nav}</nav>{sections}</body></html>"
    )
