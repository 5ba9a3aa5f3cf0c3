"""benchmarks/gpu_throughput.py: a GPU run's JSON becomes rows of hpc/study/throughput.toml."""

from __future__ import annotations

import json
import tomllib

import pytest

from benchmarks.gpu_throughput import device_key, main, toml_rows
from hpc.study.throughput import parse_table


def cohort(k: int, rate: float, **extra: object) -> dict:
    row = {
        "kind": "paper-224",
        "k": k,
        "first": 0,
        "variant": "eager",
        "compile": False,
        "loader": "MemoryTrainLoader",
        "images_per_epoch": 4096,
        "sum_images_per_s": rate,
        "member_images_per_s": rate / k,
        "mfu_matmul": 0.05,
        "failed": [],
        "diverged": 0,
    }
    return row | extra


def ffcv(loader: str, workers: int, rate: float) -> dict:
    return {
        "loader": loader,
        "workers": workers,
        "cpus": 16,
        "images": 8192,
        "width": 500,
        "height": 375,
        "kb_per_image": 81.0,
        "resolution": 224,
        "images_per_s": rate,
        "per_worker": rate / workers,
    }


@pytest.fixture
def results() -> dict:
    return {
        "env": {"device": "NVIDIA H200", "date": "2026-12-05"},
        "args": {"batch_size": 128},
        "cohort": [
            cohort(1, 9000.0),
            cohort(1, 20000.0, first=3),  # a solo of another architecture: not a cohort
            cohort(4, 15000.0, vs_solos=1.4),
            cohort(8, 17000.0, vs_solos=1.6),
            cohort(16, 16000.0, vs_solos=1.5),
            cohort(8, 30000.0, variant="graphs"),  # not what hpc runs
            cohort(16, 40000.0, failed=["RuntimeError: out of memory"]),
            cohort(8, 5000.0, loader="FfcvTrainLoader"),
        ],
        "ffcv": [
            ffcv("anysweep", 16, 11000.0),
            ffcv("anysweep", 8, 6000.0),
            ffcv("bare ffcv", 16, 12000.0),
        ],
    }


DEVICE = """default_gpu = "h200"
default_cpu = "h200"
[devices.h200]
gpu = true
overlap = true
bound = "launch"
memory_gb = 139.8
member_overhead = 0.0

"""


def table(text: str) -> dict:
    return tomllib.loads(DEVICE + text)


def test_model_row_is_the_fastest_clean_eager_cohort(results: dict) -> None:
    rows = {r["kind"]: r for r in table(toml_rows(results))["rows"]}
    assert rows["model"]["name"] == "paper-224"
    assert rows["model"]["images_per_s"] == 17000.0
    assert "K = 8" in rows["model"]["by"]


def test_loader_row_is_anysweeps_loader_with_every_core(results: dict) -> None:
    rows = {r["kind"]: r for r in table(toml_rows(results))["rows"]}
    assert rows["loader"]["name"] == "ffcv-jpeg-224"
    assert rows["loader"]["images_per_s"] == 11000.0
    assert "16 workers" in rows["loader"]["by"]


def test_rows_are_measured_h200_rows_hpc_cost_accepts(results: dict) -> None:
    parsed = parse_table(table(toml_rows(results)))
    model = parsed.row("h200", "model", "paper-224")
    assert (model.source, model.date, model.images_per_s) == ("measured", "2026-12-05", 17000.0)
    assert parsed.row("h200", "loader", "ffcv-jpeg-224").images_per_s == 11000.0


def test_model_rows_name_their_band_cohort_and_memory(results: dict) -> None:
    model = parse_table(table(toml_rows(results))).row("h200", "model", "paper-224")
    assert (model.resolution, model.flops, model.cohort) == (224, (340e6, 400e6), 8)
    assert not model.cuda_graphs


def test_the_graphs_and_streams_variant_gives_the_cuda_graph_row(results: dict) -> None:
    results["cohort"].append(cohort(8, 35000.0, variant="graphs+streams"))
    parsed = parse_table(table(toml_rows(results)))
    graphs = parsed.row("h200", "model", "paper-224-graphs")
    assert (graphs.images_per_s, graphs.cuda_graphs, graphs.cohort) == (35000.0, True, 8)
    assert graphs.memory_gb == 0.0  # left to the estimate: graph pools stay reserved


def test_comments_list_each_configuration_and_the_overlap(results: dict) -> None:
    text = toml_rows(results)
    assert "#   K=8 graphs: 30,000" in text
    assert "#   K=8 on FfcvTrainLoader: 5,000" in text
    assert "40,000" not in text  # the failed row
    # FFCV-fed K=8: 625 per member against min(11,000, 17,000 / 8 = 2,125): 29 %.
    assert "29% of full overlap" in text


def test_no_rows_without_figures() -> None:
    empty = {"env": {"device": "NVIDIA H200", "date": "2026-12-05"}, "args": {}}
    assert "rows" not in table(toml_rows(empty))


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H200", "h200"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("Tesla V100-SXM2", "tesla-v100-sxm2"),
    ],
)
def test_device_key(name: str, key: str) -> None:
    assert device_key({"device": name}) == key


def test_cli_prints_the_rows(results: dict, tmp_path, capsys) -> None:
    path = tmp_path / "gpu_results.json"
    path.write_text(json.dumps(results))
    assert main([str(path), "--device-key", "h200-sxm"]) == 0
    assert 'device = "h200-sxm"' in capsys.readouterr().out


def test_cli_names_a_missing_file(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.json")])
    assert "missing.json: no such file" in capsys.readouterr().err
