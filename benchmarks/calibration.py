"""Calibration of the report's intervals and readings on studies of known truth.

Each study is a fresh random draw from the generating model of analysis/synthetic.py with
the parameters in DATASETS (normal latent qualities, no trait coupling, errors neither
clipped nor rounded), analysed by the unchanged `analysis.report.analyze`. Every 95 %
interval the report prints is scored against the population value of what it estimates:

- r (Spearman, Pearson, Kendall of the means over seeds): for normal means with Pearson
  correlation rho_M = rho_latent * sqrt(Rm_a * Rm_b), Rm = spread^2 / (spread^2 +
  noise^2 / seeds), Spearman's is 6/pi asin(rho_M / 2) and Kendall's 2/pi asin(rho_M);
- seed-to-seed r: 6/pi asin(R1 / 2), R1 = spread^2 / (spread^2 + noise^2);
- reliability of the mean: Spearman-Brown of that at the number of seeds;
- noise ceiling and corrected r: sqrt(rel_a rel_b) and Spearman's r of the means over it;
- paired differences (proxy: r(t_mid, sub) - r(t_mid, ref); subset against control:
  r(t_mid, sub) - r(t_mid, ctl)): differences of those population values.
`--check` confirms the formulas by simulation at n = 1,000,000.

    .venv/bin/python benchmarks/calibration.py [--studies 200] [--jobs 2] [--grid 24,100,500]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.frame import StudyResults  # noqa: E402
from analysis.report import analyze  # noqa: E402
from analysis.result import Analysis  # noqa: E402
from analysis.stats import paired_difference  # noqa: E402
from analysis.synthetic import SyntheticDataset, synthetic_study  # noqa: E402
from analysis.verdicts import NEGATIVE, POSITIVE  # noqa: E402

REFERENCE = "ref"
TARGETS = ("t_null", "t_mid", "t_same", "t_neg")
PROXY = ("t_mid", "sub", REFERENCE)  # r(t_mid, sub) - r(t_mid, ref), fixed in advance
CONTROL = ("t_mid", "sub", "ctl")  # r(t_mid, sub) - r(t_mid, ctl)
DATASETS = (
    SyntheticDataset(REFERENCE, 10, 32, 6000, 1000, rho=1.0, spread=4, seed_noise=2.0),
    SyntheticDataset(
        "sub", 5, 32, 3000, 500, rho=0.8, small=0.5, spread=4, seed_noise=3.0, parent=REFERENCE
    ),
    SyntheticDataset(
        "ctl",
        10,
        32,
        3000,
        1000,
        rho=0.9,
        small=0.3,
        spread=4,
        seed_noise=3.0,
        parent=REFERENCE,
        kind="control",
    ),
    SyntheticDataset("t_null", 10, 32, 6000, 1000, rho=0.0, spread=4, seed_noise=2.5),
    SyntheticDataset("t_mid", 10, 32, 6000, 1000, rho=0.5, small=0.5, spread=4, seed_noise=3.0),
    SyntheticDataset("t_same", 10, 32, 6000, 1000, rho=1.0, spread=4, seed_noise=3.0),
    SyntheticDataset("t_neg", 10, 32, 6000, 1000, rho=-0.4, spread=4, seed_noise=2.0),
)
SPECS = {d.name: d for d in DATASETS}
INTERVALS = (
    "spearman",
    "pearson",
    "kendall",
    "seed_r",
    "reliability",
    "ceiling",
    "corrected",
    "proxy_diff",
    "curve_r",
    "curve_corrected",
    "control_diff",
)


# ---- population values -------------------------------------------------------------------
def _latent(a: str, b: str) -> float:
    if a == b:
        return 1.0
    sa, sb = SPECS[a], SPECS[b]
    return sa.rho * sb.rho + sa.small * sb.small


def _mean_reliability(name: str, seeds: int) -> float:
    d = SPECS[name]
    return d.spread**2 / (d.spread**2 + d.seed_noise**2 / seeds)


def _spearman(rho: float) -> float:
    return 6 / math.pi * math.asin(rho / 2)


def pearson_truth(a: str, b: str, seeds: int) -> float:
    """Population Pearson r of the two datasets' means over `seeds` seeds."""
    return _latent(a, b) * math.sqrt(_mean_reliability(a, seeds) * _mean_reliability(b, seeds))


def spearman_truth(a: str, b: str, seeds: int) -> float:
    return _spearman(pearson_truth(a, b, seeds))


def kendall_truth(a: str, b: str, seeds: int) -> float:
    return 2 / math.pi * math.asin(pearson_truth(a, b, seeds))


def seed_r_truth(name: str) -> float:
    return _spearman(_mean_reliability(name, 1))


def reliability_truth(name: str, seeds: int) -> float:
    single = seed_r_truth(name)
    return seeds * single / (1 + (seeds - 1) * single)


def truths(seeds: int) -> dict[tuple[str, str], float]:
    """(interval kind, dataset or pair) -> population value, for a study with `seeds`."""
    out: dict[tuple[str, str], float] = {}
    for d in [n for n in SPECS if n != REFERENCE]:
        out[("spearman", d)] = spearman_truth(REFERENCE, d, seeds)
        out[("pearson", d)] = pearson_truth(REFERENCE, d, seeds)
        out[("kendall", d)] = kendall_truth(REFERENCE, d, seeds)
    for d in SPECS:
        if seeds > 1:
            out[("seed_r", d)] = seed_r_truth(d)
            out[("reliability", d)] = reliability_truth(d, seeds)
    if seeds > 1:
        for d in [n for n in SPECS if n != REFERENCE]:
            ceiling = math.sqrt(reliability_truth(REFERENCE, seeds) * reliability_truth(d, seeds))
            out[("ceiling", d)] = ceiling
            out[("corrected", d)] = out[("spearman", d)] / ceiling
    target, a, b = PROXY
    out[("proxy_diff", target)] = spearman_truth(target, a, seeds) - spearman_truth(
        target, b, seeds
    )
    for point in ("sub", REFERENCE):
        out[("curve_r", point)] = spearman_truth("t_mid", point, seeds)
        if seeds > 1:
            rel = reliability_truth("t_mid", seeds) * reliability_truth(point, seeds)
            out[("curve_corrected", point)] = out[("curve_r", point)] / math.sqrt(rel)
    target, a, b = CONTROL
    out[("control_diff", target)] = spearman_truth(target, a, seeds) - spearman_truth(
        target, b, seeds
    )
    return out


def simulate(seeds: int, n: int = 1_000_000, seed: int = 0) -> dict[tuple[str, str], float]:
    """The same population values by simulation: n architectures drawn from the model."""
    from scipy import stats as sps

    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2))
    means, single = {}, {}
    for name, d in SPECS.items():
        rest = math.sqrt(max(0.0, 1 - d.rho**2 - d.small**2))
        true = d.base - d.spread * (
            d.rho * z[:, 0] + d.small * z[:, 1] + rest * rng.standard_normal(n)
        )
        runs = true[:, None] + d.seed_noise * rng.standard_normal((n, max(seeds, 2)))
        means[name] = runs[:, :seeds].mean(axis=1)
        single[name] = sps.spearmanr(runs[:, 0], runs[:, 1]).statistic
    out: dict[tuple[str, str], float] = {}
    for other in [x for x in SPECS if x != REFERENCE]:
        a, b = means[REFERENCE], means[other]
        out[("spearman", other)] = float(sps.spearmanr(a, b).statistic)
        out[("pearson", other)] = float(np.corrcoef(a, b)[0, 1])
        out[("kendall", other)] = float(sps.kendalltau(a, b).statistic)
    for name in SPECS:
        out[("seed_r", name)] = float(single[name])
    return out


# ---- one study ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    architectures: int
    seeds: int
    bootstrap: int = 500
    headline_error: float = 0.01
    names: tuple[str, ...] = ()  # the datasets of DATASETS to draw (default: all)


def _intervals(a: Analysis) -> list[tuple[str, str, float, float, float]]:
    """(kind, what, estimate, lo, hi) of every scored interval of one analysis."""
    rows = []
    against = a.against.set_index("dataset")
    for d, r in against.iterrows():
        rows.append(("spearman", d, r["r"], r["lo"], r["hi"]))
        rows.append(("ceiling", d, r["ceiling"], r["ceiling_lo"], r["ceiling_hi"]))
        rows.append(("corrected", d, r["r_corrected"], r["corrected_lo"], r["corrected_hi"]))
        for method in ("pearson", "kendall"):
            m = a.correlations[method].get(REFERENCE, d)
            rows.append((method, d, m["r"], m["lo"], m["hi"]))
    for d, r in a.noise.set_index("dataset").iterrows():
        rows.append(("seed_r", d, r["seed_r"], r["seed_lo"], r["seed_hi"]))
        rows.append(("reliability", d, r["reliability"], r["reliability_lo"], r["reliability_hi"]))
    target, first, second = PROXY
    if {target, first, second} <= set(a.correlations[a.method].names):
        diff = paired_difference(a.correlations[a.method], (target, first), (target, second))
        rows.append(("proxy_diff", target, *diff))
    curve = a.subset_curve[a.subset_curve["target"] == "t_mid"].set_index("dataset")
    for point, r in curve.iterrows():
        rows.append(("curve_r", point, r["r"], r["lo"], r["hi"]))
        rows.append(
            ("curve_corrected", point, r["r_corrected"], r["corrected_lo"], r["corrected_hi"])
        )
    for r in a.subset_controls[a.subset_controls["target"] == CONTROL[0]].itertuples():
        rows.append(("control_diff", r.target, r.classes_effect, r.classes_lo, r.classes_hi))
    return rows


def one_study(config: Config, seed: int) -> pd.DataFrame:
    """Draw study `seed`, analyse it unchanged, and list its intervals and readings."""
    results, _ = synthetic_study(
        architectures=config.architectures,
        seeds=config.seeds,
        datasets=[SPECS[name] for name in config.names] if config.names else DATASETS,
        reference=REFERENCE,
        curves=False,
        quantize=False,
        trait_signal=0.0,
        seed=seed,
    )
    a = analyze(
        StudyResults(results),
        bootstrap=config.bootstrap,
        permutations=0,
        seed=seed,
        headline_error=config.headline_error,
    )
    frame = pd.DataFrame(_intervals(a), columns=["kind", "what", "estimate", "lo", "hi"])
    verdicts = a.against.set_index("dataset")["verdict"]
    readings = a.subset_controls.set_index("target")["reading"]
    frame.attrs = {
        "verdicts": verdicts.to_dict(),
        "readings": readings.to_dict(),
        "headline_bootstrap": a.headline_bootstrap,
    }
    return frame


def score(frames: Iterable[pd.DataFrame], seeds: int, shrink: float = 1.0) -> pd.DataFrame:
    """Coverage per (kind, what): the share of studies whose interval holds the population
    value. `shrink` < 1 scales each interval about its estimate (0.5: half the width)."""
    truth = truths(seeds)
    rows = []
    for frame in frames:
        for r in frame.itertuples():
            value = truth.get((r.kind, r.what))
            if value is None:
                continue
            lo, hi = r.lo, r.hi
            if np.isfinite(r.estimate):  # an unbounded end stays unbounded
                lo = r.estimate - shrink * (r.estimate - r.lo)
                hi = r.estimate + shrink * (r.hi - r.estimate)
            rows.append((r.kind, r.what, bool(lo <= value <= hi), bool(np.isnan(r.lo))))
    table = pd.DataFrame(rows, columns=["kind", "what", "covered", "undefined"])
    return table.groupby(["kind", "what"]).agg(
        coverage=("covered", "mean"), studies=("covered", "size"), undefined=("undefined", "mean")
    )


def verdict_rates(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per target of known truth: how often each reading was printed."""
    rows = []
    for frame in frames:
        for target, text in frame.attrs["verdicts"].items():
            sign = text.split(";")[0]
            rows.append(
                {
                    "target": target,
                    "clearly positive": sign == POSITIVE,
                    "clearly negative": sign == NEGATIVE,
                    "below perfect agreement": "below perfect agreement" in text,
                    "perfect agreement not excluded": "not excluded" in text,
                }
            )
        for target, text in frame.attrs["readings"].items():
            rows.append({"target": f"{target} (subset vs control)", "classes help": "help" in text})
    return pd.DataFrame(rows).groupby("target").mean()


# ---- the grid ----------------------------------------------------------------------------
def _studies(args: tuple[Config, list[int]]) -> list[pd.DataFrame]:
    config, seeds = args
    return [one_study(config, seed) for seed in seeds]


def run_point(config: Config, studies: int, jobs: int = 1, offset: int = 0) -> list[pd.DataFrame]:
    """`studies` fresh studies of one grid point (study seeds offset .. offset+studies-1),
    on `jobs` processes."""
    seeds = list(range(offset, offset + studies))
    if jobs <= 1:
        return _studies((config, seeds))
    parts = [(config, seeds[i::jobs]) for i in range(jobs)]
    with ProcessPoolExecutor(jobs) as pool:
        frames = [f for chunk in pool.map(_studies, parts) for f in chunk]
    return frames


def summarise(config: Config, frames: list[pd.DataFrame]) -> dict[str, float]:
    covered = score(frames, config.seeds)
    pooled = covered.groupby(level="kind").apply(
        lambda g: float((g["coverage"] * g["studies"]).sum() / g["studies"].sum())
    )
    worst = covered.groupby(level="kind")["coverage"].min()
    out: dict[str, float] = {
        "n": config.architectures,
        "seeds": config.seeds,
        "studies": len(frames),
    }
    for kind in INTERVALS:
        if kind in pooled:
            out[kind] = pooled[kind]
            out[f"{kind}_min"] = worst[kind]
    rates = verdict_rates(frames)
    out["null_positive"] = rates.loc["t_null", "clearly positive"]
    out["null_negative"] = rates.loc["t_null", "clearly negative"]
    out["mid_positive"] = rates.loc["t_mid", "clearly positive"]
    out["same_below_perfect"] = rates.loc["t_same", "below perfect agreement"]
    out["null_classes_help"] = rates.loc["t_null (subset vs control)", "classes help"]
    out["headline_bootstrap"] = float(np.median([f.attrs["headline_bootstrap"] for f in frames]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--grid", default="24,100,500", help="architecture counts")
    parser.add_argument("--seeds", default="1,2,3", help="seed counts")
    parser.add_argument("--bootstrap", type=int, default=500, help="resamples of the tables")
    parser.add_argument(
        "--headline-error",
        type=float,
        default=0.01,
        help="Monte-Carlo error the headline's resample count aims at (the report's: 0.005)",
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="confirm the population values")
    parser.add_argument("--out", default=None, help="CSV of the summary rows")
    args = parser.parse_args()
    if args.check:
        _check()
    if args.studies == 0:
        return 0
    start, cpu = time.perf_counter(), time.process_time()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rows = []
    for n in (int(x) for x in args.grid.split(",")):
        for seeds in (int(x) for x in args.seeds.split(",")):
            t = time.perf_counter()
            config = Config(n, seeds, args.bootstrap, args.headline_error)
            frames = run_point(config, args.studies, args.jobs)
            rows.append(summarise(config, frames))
            print(
                f"n={n} seeds={seeds}: {time.perf_counter() - t:.0f} s, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            print(pd.Series(rows[-1]).round(3).to_string(), flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print(_markdown(table))
    print(
        f"wall {time.perf_counter() - start:.0f} s, cpu (this process) "
        f"{time.process_time() - cpu:.0f} s, load average at end: {os.getloadavg()}"
    )
    return 0


def _check() -> None:
    for seeds in (1, 2, 3):
        formula, simulated = truths(seeds), simulate(seeds)
        gaps = {k: abs(formula[k] - v) for k, v in simulated.items() if k in formula}
        worst = max(gaps, key=gaps.get)  # type: ignore[arg-type]
        print(
            f"seeds={seeds}: {len(gaps)} population values, formula vs simulation at n=1e6: "
            f"largest gap {gaps[worst]:.4f} ({worst})",
            flush=True,
        )


def _markdown(table: pd.DataFrame) -> str:
    def pct(value: float) -> str:
        return "–" if not np.isfinite(value) else f"{100 * value:.1f}"

    kinds = [k for k in INTERVALS if k in table.columns]
    head = "| n | seeds | " + " | ".join(kinds) + " |"
    lines = [head, "|" + "---|" * (len(kinds) + 2)]
    for r in table.to_dict(orient="records"):
        cells = [pct(r.get(k, np.nan)) for k in kinds]
        lines.append(f"| {r['n']} | {r['seeds']} | " + " | ".join(cells) + " |")
    rates = [
        "null_positive",
        "null_negative",
        "mid_positive",
        "same_below_perfect",
        "null_classes_help",
    ]
    lines += ["", "| n | seeds | " + " | ".join(rates) + " | headline resamples |"]
    lines.append("|" + "---|" * (len(rates) + 3))
    for r in table.to_dict(orient="records"):
        cells = [pct(r[k]) for k in rates]
        lines.append(
            f"| {r['n']} | {r['seeds']} | "
            + " | ".join(cells)
            + f" | {r['headline_bootstrap']:,.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
