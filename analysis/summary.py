"""The study's answer as plain text: the table `anysweep demo` prints at its end (each
target against the reference and its subsets, the noise ceilings, the readings of the
controls and the recommended proxies), built from an `Analysis`."""

from __future__ import annotations

import math

import pandas as pd

from analysis.result import Analysis

_COLUMN = 26


def _fmt(r: float, lo: float, hi: float) -> str:
    if not math.isfinite(r):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{r:+.2f}"
    return f"{r:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _cell(a: Analysis, target: str, column: str) -> str:
    if column == a.reference:
        row = a.against.set_index("dataset").loc[target]  # the headline's resamples
    else:
        row = a.correlations[a.method].get(target, column)
    return _fmt(row["r"], row["lo"], row["hi"])


def _table(a: Analysis) -> list[str]:
    seeds = int(a.noise["seeds"].max()) if len(a.noise) else 0
    columns = [a.reference, *sorted(a.subsets, key=lambda name: a.subsets[name])]
    width = max(len(name) for name in [*a.targets, *columns, "target"]) + 2
    ceiling = a.against.set_index("dataset")["ceiling"]
    lines = [
        f"Does the ranking on {a.reference} transfer? {a.method.title()} correlation of test "
        f"error (mean over {seeds} seed{'s' if seeds != 1 else ''}) over {len(a.errors)} "
        f"architectures, {a.confidence:.0%} bootstrap interval:",
        "",
        "target".ljust(width) + "".join(f"vs {c}".ljust(_COLUMN) for c in columns) + "ceiling",
    ]
    for target in a.targets:
        cells = "".join(_cell(a, target, c).ljust(_COLUMN) for c in columns)
        value = ceiling.get(target, float("nan"))
        lines.append(
            target.ljust(width) + cells + (f"{value:.2f}" if math.isfinite(value) else "–")
        )
    if not a.headline_bootstrap:
        return [*lines, "no bootstrap resamples: no intervals"]
    lines.append(
        f"interval ends move by up to {a.headline_mc_error:.3f} (Monte-Carlo standard error) with "
        f"the resampling seed against {a.reference} ({a.headline_bootstrap:,} resamples), "
        f"{a.mc_error:.3f} against its subsets ({a.bootstrap:,})"
    )
    return lines


def _noise(a: Analysis) -> list[str]:
    values = a.noise.set_index("dataset")["reliability"]
    if not values.notna().any():
        return ["noise ceiling: unknown with one seed (no seed-to-seed agreement to measure)"]
    shown = ", ".join(f"{name} {value:.2f}" for name, value in values.items() if pd.notna(value))
    return [
        f"reliability of each dataset's mean over seeds: {shown}",
        f"ceiling = sqrt(reliability of {a.reference} x reliability of the target): the r "
        "expected at most if the two noise-free rankings agreed perfectly (one study's r can "
        "exceed it by chance)",
    ]


def _controls(a: Analysis) -> list[str]:
    if a.subset_controls.empty:
        return []
    lines = [
        "fewer classes beyond fewer images: r with the subset - r with its size-matched control"
    ]
    for r in a.subset_controls.itertuples():
        lines.append(
            f"  {r.target}: {r.subset} vs {r.control}: "
            f"{_fmt(r.classes_effect, r.classes_lo, r.classes_hi)}  {r.reading}"
        )
    return lines


def _recommendations(a: Analysis) -> list[str]:
    recs = a.recommendations
    if not len(recs):
        return []
    lines = [
        "recommended proxy (the cheapest clearly positive one not distinguishable from the best "
        "at this sample size):"
    ]
    for row in recs.itertuples():
        if row.found:
            lines.append(
                f"  {row.target}: {row.recommended} (r={row.recommended_r:+.2f}, "
                f"{row.recommended_gpu_hours * 3600:.1f} s per training)"
            )
        else:
            lines.append(f"  {row.target}: none correlates clearly: train on it")
    return lines


def summary_text(a: Analysis) -> str:
    """The demo's closing table: what the study found, in a terminal's width."""
    blocks = [_table(a), _noise(a), _controls(a), _recommendations(a)]
    lines: list[str] = []
    for block in blocks:
        if block:
            lines += [*([""] if lines else []), *block]
    return "\n".join(line.rstrip() for line in lines)
