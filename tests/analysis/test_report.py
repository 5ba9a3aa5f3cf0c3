"""The analysis as a whole and the report it writes: values traceable to results.h5, a
self-contained HTML page that a real browser renders."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg
from scipy import stats as sps

from analysis.html import SECTIONS
from analysis.report import analyze

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _raw_errors(path: Path) -> dict[str, pd.Series]:
    """Per dataset, mean top-1 error over done seeds per architecture, read with h5py alone."""
    out = {}
    with h5py.File(path) as handle:
        for name, group in handle["datasets"].items():
            frame = pd.DataFrame(
                {
                    "arch": group["arch_id"][()],
                    "err": group["top1_err"][()],
                    # dictionary-encoded: codes into strings/status
                    "status": group["strings/status"].asstr()[()][group["status"][()]],
                }
            )
            out[name] = frame[frame["status"] == "done"].groupby("arch")["err"].mean()
    return out


class _Page(HTMLParser):
    """Collects what the tests check: references, ids, headings and tables' cells."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self.headings: list[str] = []
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self._table: str | None = None
        self._cell: tuple[str, str | None] | None = None
        self._heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("src", "href"):
            if key in attrs:
                self.refs.append((tag, key, attrs[key]))
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._table:
            self._cell = ("", attrs.get("data-value"))
        elif tag == "h2":
            self._heading = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "h2":
            self._heading = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell = (self._cell[0] + data, self._cell[1])
        if self._heading:
            self.headings[-1] += data


@pytest.fixture(scope="module")
def page(report) -> _Page:
    parser = _Page()
    parser.feed(Path(report["report"]).read_text(encoding="utf-8"))
    return parser


def test_headline_equals_scipy_on_errors_read_straight_from_results_h5(analysis, study_dir):
    raw = _raw_errors(study_dir[0] / "results.h5")
    for row in analysis.headline.itertuples():
        both = pd.concat([raw["imagenet"], raw[row.dataset]], axis=1, join="inner")
        assert row.n == len(both)
        assert row.r == pytest.approx(
            sps.spearmanr(both.iloc[:, 0], both.iloc[:, 1]).statistic, abs=1e-12
        )
        assert row.lo <= row.r <= row.hi


def test_headline_covers_the_targets_and_the_subsets_form_the_curve(analysis):
    assert analysis.targets == [
        "cifar10",
        "cifar100",
        "concrete",
        "ham10000",
        "insects",
        "mlc2008",
        "natural",
        "powerline",
    ]
    assert analysis.headline["dataset"].tolist() == analysis.targets
    assert sorted(set(analysis.subset_curve["k"])) == [10, 50, 100, 500, 1000]


def test_planted_correlations_lie_inside_the_corrected_intervals(analysis, study_dir):
    truth = study_dir[1]
    inside = [
        row.corrected_lo - 0.02 <= truth.rho[row.dataset] <= row.corrected_hi + 0.02
        for row in analysis.headline.itertuples()
    ]
    # Pearson truth vs Spearman estimate on 120 architectures: allow one miss in eight.
    assert sum(inside) >= len(inside) - 1


def test_unknown_reference_names_the_datasets_present(study):
    with pytest.raises(
        ValueError, match=r"reference dataset 'imagenet21k' is not in .*\['cifar10', "
    ):
        analyze(study, reference="imagenet21k")


def test_tables_are_written_as_csv_with_the_analysis_values(report, analysis):
    headline = pd.read_csv(report["tables"]["headline"])
    np.testing.assert_allclose(headline["r"], analysis.headline["r"])
    matrix = pd.read_csv(report["tables"]["matrix_spearman"], index_col="dataset")
    assert matrix.loc["cifar10", "imagenet"] == pytest.approx(
        analysis.correlations["spearman"].get("imagenet", "cifar10")["r"]
    )
    assert {
        "proxies",
        "recommendations",
        "noise_floor",
        "traits",
        "subset_curves",
        "correlations_kendall",
    } <= set(report["tables"])


def test_figures_are_nonblank_pngs(report):
    assert set(report["figures"]) == {
        "scatter",
        "heatmap",
        "edf",
        "subsets",
        "traits",
        "top_agreement",
    }
    for path in report["figures"].values():
        pixels = mpimg.imread(path)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 300
        assert pixels[..., :3].std() > 0.05


def test_html_is_self_contained(page, report):
    text = Path(report["report"]).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert not {"script", "link", "iframe"} & page.tags
    images = [value for tag, key, value in page.refs if tag == "img"]
    assert len(images) == len(report["figures"])
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_link_points_at_a_section_of_the_page(page):
    links = [value for tag, key, value in page.refs if tag == "a"]
    assert len(links) == len(SECTIONS)
    for link in links:
        assert link.startswith("#") and link[1:] in page.ids


def test_sections_read_top_to_bottom(page):
    assert page.headings == [title for _, title in SECTIONS]


def test_headline_table_shows_the_numbers_analysis_computed(page, analysis):
    rows = page.tables["headline"][1:]  # the first row is the header
    assert [cells[0][0] for cells in rows] == analysis.headline["dataset"].tolist()
    for cells, row in zip(rows, analysis.headline.itertuples(), strict=True):
        text, value = cells[2]
        assert float(value) == row.r and text == f"{row.r:.2f}"
        assert cells[3][0] == f"[{row.lo:.2f}, {row.hi:.2f}]"
        assert float(cells[5][1]) == pytest.approx(row.ceiling)
        assert cells[8][0] == row.verdict


def test_report_renders_in_headless_chromium(report, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true and chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    shot = tmp_path / "report.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        Path(report["report"]).resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels[..., :3].var() > 0.01
    # Text, tables and figures fill the page from the top: no blank first screen.
    assert pixels[:800, :, :3].std() > 0.05


def test_a_study_still_running_is_analysed_pairwise_and_reports_what_is_missing(tmp_path):
    from analysis.frame import open_results
    from analysis.report import write_report
    from analysis.synthetic import SyntheticDataset, synthetic_results

    datasets = [
        SyntheticDataset("imagenet", 1000, 224, 1_281_167, 50_000, rho=1.0),
        SyntheticDataset(
            "imagenet_k10", 10, 224, 13_000, 500, rho=0.7, parent="imagenet", coverage=0.5
        ),
        SyntheticDataset("cifar10", 10, 32, 50_000, 10_000, rho=0.5),
        SyntheticDataset("pending", 2, 64, 32_000, 8_000, coverage=0.0),
    ]
    synthetic_results(
        tmp_path / "results.h5", architectures=40, seeds=2, datasets=datasets, curves=False
    )
    result = analyze(open_results(tmp_path), bootstrap=50, permutations=50)
    curve = result.subset_curve.set_index(["target", "dataset"])
    assert curve.loc[("cifar10", "imagenet_k10"), "n"] == 20
    assert curve.loc[("cifar10", "imagenet"), "n"] == 40
    pending = result.headline.set_index("dataset").loc["pending"]
    assert pending["n"] == 0 and pending["verdict"] == "too few architectures in common"
    assert result.datasets.set_index("dataset").loc["pending", "missing"] == 80
    html = Path(write_report(result, tmp_path / "report")["report"]).read_text(encoding="utf-8")
    assert "too few architectures in common" in html


def test_a_verdict_follows_from_what_the_intervals_exclude():
    from analysis.verdicts import verdict

    def row(lo, hi, corrected_hi):
        return pd.Series({"r": (lo + hi) / 2, "lo": lo, "hi": hi, "corrected_hi": corrected_hi})

    assert verdict(row(0.15, 0.8, 1.3)) == "clearly positive; perfect agreement not excluded"
    assert verdict(row(0.15, 0.6, 0.9)) == "clearly positive; below perfect agreement"
    assert verdict(row(-0.2, 0.6, 1.3)) == "no clear relation"
    assert verdict(row(-0.7, -0.1, np.nan)) == "clearly negative"
    assert verdict(row(0.3, 0.7, np.nan)) == "clearly positive; noise ceiling unknown"
