"""Planning in cohorts: K from the throughput table (loading against steps, memory), chunks of
whole cohorts whose members share their wall time, arrays split as before, K and the CUDA-graph
stepping written into the manifests, and the paper preset's dry run on an H200 and a V100."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpc.scheduling import pricing
from hpc.scheduling.cost import cohorts
from hpc.scheduling.manifest import read_manifest
from hpc.scheduling.plan import CELL_OVERHEAD_S, CHUNK_OVERHEAD_S, make_plan
from hpc.scheduling.schedulers import Submission
from hpc.study.population import sample_architectures
from hpc.study.presets import PRESETS_DIR
from hpc.study.spec import load_study
from hpc.study.throughput import parse_table

STUDY = """\
[study]
architectures = 7
seeds = 2

[design]
max_depth = 2
max_width = 32
stem = "small"
resolution = 16
num_classes = 10

[recipe]
epochs = 2
{recipe}

[cluster]
gpu = "h200"
time_min = 10
margin = 1.0
{cluster}

[datasets.digits]
"""
# digits: 1,438 training and 359 test images at 16 px, in memory (loading inside the steps).
TRAIN, TEST = 1438, 359


def _table(rate: float = 1000.0, memory_gb: float = 0.0, loader: float = 0.0) -> object:
    """A GPU kind (named h200, a kind study.toml accepts) whose one model row stands for every
    architecture at 16 px; its memory backend loads inside the steps unless `loader` gives
    it a rate."""
    device = dict(gpu=True, overlap=True, bound="launch", memory_gb=10.0, member_overhead=0.0)
    memory = dict(backend="memory", resolution=16, source="measured", date="x", device="h200")
    memory |= dict(kind="loader", name="memory-16")
    memory |= dict(images_per_s=loader) if loader else dict(inline=True)
    model = dict(device="h200", kind="model", name="net", images_per_s=rate, source="measured")
    model |= dict(date="x", resolution=16, flops=[1, 1e12], cohort=1, memory_gb=memory_gb)
    graphs = model | dict(name="net-graphs", images_per_s=2 * rate, cuda_graphs=True)
    return parse_table(
        {
            "default_gpu": "h200",
            "default_cpu": "h200",
            "devices": {"h200": device},
            "rows": [memory, model, graphs],
        }
    )


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A study on the synthetic table; `study(cluster_lines, **table)` rewrites it."""

    def make(cluster: str = "", recipe: str = "", **table):
        monkeypatch.setattr(pricing, "load_table", lambda: _table(**table))
        (tmp_path / "study.toml").write_text(STUDY.format(cluster=cluster, recipe=recipe))
        return load_study(tmp_path)

    return make


def _member_seconds(rate: float) -> float:
    return 2 * (TRAIN + TEST / 3) / rate  # two epochs, evaluation a third of a step


def test_auto_k_is_where_loading_is_hidden(study) -> None:
    # Loading 250 img/s, members 1,000 img/s summed: four members' steps cover it.
    s = study(cluster="cuda_graphs = false", loader=250.0)
    p = pricing.price(s, s.datasets[0], sample_architectures(s, write=False))
    assert p.k == math.ceil((TRAIN + TEST) / (TRAIN + TEST / 3) * 1000 / 250) == 5
    assert "keeps up from K = 5" in p.why


def test_auto_k_stops_where_memory_does(study) -> None:
    # 10 GiB, 90 % of it less 1 GiB reserved: 8 GiB for members of 3 GiB each.
    s = study(cluster="cuda_graphs = false", loader=250.0, memory_gb=3.0)
    p = pricing.price(s, s.datasets[0], sample_architectures(s, write=False))
    assert p.k == 2
    assert "memory allows 2 (3 GiB per member, measured)" in p.why


def test_cuda_graphs_auto_prices_bf16_gpu_cohorts_from_the_graph_row(study) -> None:
    s = study(cluster='cohort = 3\ncuda_graphs = "auto"')
    population = sample_architectures(s, write=False)
    p = pricing.price(s, s.datasets[0], population)
    assert p.graphs and p.work.rates.tolist() == [2000.0] * 7
    s = study(cluster="cohort = 1")  # alone: auto leaves the cell eager
    assert not pricing.price(s, s.datasets[0], population).graphs
    s = study(cluster="cohort = 3\ncuda_graphs = false")
    assert not pricing.price(s, s.datasets[0], population).graphs
    s = study(cluster="cohort = 3", recipe='precision = "fp32"')
    assert not pricing.price(s, s.datasets[0], population).graphs


def test_chunks_hold_whole_cohorts_of_one_seed(study) -> None:
    # Cohorts of 3: per seed [0, 1, 2], [3, 4, 5], [6].
    s = study(cluster="cohort = 3", rate=100.0)
    plan = make_plan(s, sample_architectures(s), array_size=100)
    planned = cohorts([c for chunk in plan.chunks for c in chunk.cells], lambda c: c[1], 3)
    assert [[a for a, _ in g] for g in planned] == [[0, 1, 2], [3, 4, 5], [6]] * 2
    assert all(chunk.cohort == 3 for chunk in plan.chunks)
    for group in planned:
        holders = [i for i, chunk in enumerate(plan.chunks) if set(group) <= set(chunk.cells)]
        assert len(holders) == 1, group
    assert sum(len(c.cells) for c in plan.chunks) == 14


def test_a_cohorts_members_share_its_wall_time_in_the_chunks_estimate(study) -> None:
    # A cohort of 3: 3 x (31 s of steps + 30 s of start-up) = 183 s; a seed's three cohorts
    # 428 s, inside the 480 s a 10-minute task leaves after its start-up: two chunks.
    s = study(cluster="cohort = 3\ncuda_graphs = false", rate=100.0)
    plan = make_plan(s, sample_architectures(s), array_size=100)
    cell = _member_seconds(100.0) + CELL_OVERHEAD_S
    assert [len(chunk.cells) for chunk in plan.chunks] == [7, 7]
    assert [c.seconds for c in plan.chunks] == pytest.approx([7 * cell + CHUNK_OVERHEAD_S] * 2)
    assert plan.gpu_hours == pytest.approx(14 * cell / 3600)


def test_a_cohort_longer_than_the_time_limit_runs_in_a_chunk_of_its_own(study) -> None:
    s = study(cluster="cohort = 3", rate=5.0)  # a cohort: about 1,300 s against 480 s
    plan = make_plan(s, sample_architectures(s), array_size=100)
    assert [len(c.cells) for c in plan.chunks] == [3, 3, 1, 3, 3, 1]


def test_arrays_split_at_max_array_size_with_whole_cohorts(study) -> None:
    s = study(cluster="cohort = 3", rate=5.0)
    plan = make_plan(s, sample_architectures(s), array_size=4)
    assert [len(a.chunks) for a in plan.arrays] == [4, 2]
    assert [a.label for a in plan.arrays] == ["digits-0", "digits-1"]


def test_manifests_carry_the_cohort_size_and_the_stepping(study, tmp_path) -> None:
    s = study(cluster="cohort = 3", rate=100.0)
    population = sample_architectures(s)
    plan = make_plan(s, population, array_size=100)
    paths = Submission(s, plan, population, "L0001").write_manifests(
        lambda array, i: tmp_path / "manifests" / f"{array.label}-{i}.json"
    )
    manifests = [read_manifest(p) for p in paths[0]]
    assert [(m.cohort, m.cuda_graphs) for m in manifests] == [(3, True)] * 2
    assert [len(m.cells) for m in manifests] == [7, 7]


def test_the_dry_run_shows_each_datasets_cohorts_and_why(study) -> None:
    from hpc.scheduling.plan import format_plan

    s = study(cluster="cohort = 3", rate=100.0)
    text = format_plan(make_plan(s, sample_architectures(s), array_size=100), s)
    assert "  digits-0                      2      14   3" in text
    assert "  digits                 3        6  yes     cohort = 3 in study.toml" in text


def test_the_demo_on_cpu_keeps_cells_alone_as_its_table_says(tmp_path) -> None:
    (tmp_path / "study.toml").write_text((PRESETS_DIR / "demo.toml").read_text())
    demo = load_study(tmp_path)
    population = sample_architectures(demo, write=False)
    found = [pricing.price(demo, e, population) for e in demo.datasets]
    assert {p.kind for p in found} == {"cpu-2"}
    assert [p.k for p in found] == [1] * len(demo.datasets) == [1] * 9  # 2 size controls
    assert all("each extra member costs 1% more compute" in p.why for p in found)


def _paper(tmp_path: Path, datasets: str | None = None) -> str:
    text = (PRESETS_DIR / "paper.toml").read_text()
    if datasets is not None:
        text = text[: text.index("[datasets.imagenet]")] + datasets
    (tmp_path / "study.toml").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    done = subprocess.run(
        [sys.executable, "-m", "hpc.cli", "launch", str(tmp_path), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # The plan is printed, then one error: the placeholder source paths are not there.
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
    return done.stdout


def test_paper_dry_run_projects_an_h200_beside_the_assumed_v100(tmp_path) -> None:
    out = _paper(tmp_path)
    lines = [line.strip() for line in out.splitlines()]
    assert "projection of all 9,500 cells from the throughput table (no calibration):" in lines
    h200 = next(line for line in lines if line.startswith("h200, CUDA graphs, as planned:"))
    assert h200.startswith("h200, CUDA graphs, as planned: 21.1 GPU-days = steps 17.8 + loading")
    assert "start-up 3.3 (30 s per cell, assumed); 1,197 cohorts" in h200
    assert any(line.startswith("h200, eager steps: 39.1 GPU-days") for line in lines)
    assert any(line.startswith("v100, eager steps: 95.4 GPU-days") for line in lines)
    rests = [line for line in lines if line.startswith("rests on measured rows only")]
    assert rests[0].startswith(
        "rests on measured rows only: no (16 of 19 datasets on measured rows; steps estimated "
        "from paper-224-graphs, no faster at fewer multiply-adds (launch-bound); loading "
        "estimated from memory-224 for powerline, cifar10, cifar100)"
    )
    assert rests[2].startswith("rests on measured rows only: no, every v100 row is assumed")
    imagenet = next(line for line in lines if line.startswith("imagenet "))
    assert imagenet.split()[:4] == ["imagenet", "8", "63", "yes"]
    assert "loading ffcv-jpeg-224 measured, 4,087 img/s keeps up from K = 3" in imagenet
    assert (
        "steps paper-224-graphs measured, 9,742 img/s summed; rates measured at K = 8" in imagenet
    )


def test_a_study_on_measured_rows_only_says_so(tmp_path) -> None:
    out = _paper(tmp_path, '[datasets.imagenet]\npath = "/x"\n[datasets.imagenet_k100]\n')
    lines = [line.strip() for line in out.splitlines()]
    assert lines[lines.index(next(x for x in lines if x.startswith("h200, CUDA"))) + 1] == (
        "rests on measured rows only: yes"
    )
