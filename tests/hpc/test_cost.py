"""The cohort cost model: data once per cohort, compute per member, rows found or estimated
from the throughput table, the memory cap and the K that `cohort = "auto"` picks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpc.scheduling.cost import (
    Memory,
    Work,
    choose_cohort,
    cohorts,
    loader_keeps_up,
    loader_rate,
    member_memory,
    memory_cap,
    model_rates,
)
from hpc.study.throughput import load_table, parse_table


def _device(overlap: bool, bound: str = "compute", memory_gb: float = 10.0, **extra) -> dict:
    return (
        dict(overlap=overlap, gpu=overlap, bound=bound, memory_gb=memory_gb, member_overhead=0.0)
        | extra
    )


def _model(device: str, name: str, rate: float, res: int, lo: float, hi: float, **extra) -> dict:
    row = dict(device=device, kind="model", name=name, images_per_s=rate, source="measured")
    return row | dict(date="x", resolution=res, flops=[lo, hi]) | extra


def _loader(device: str, name: str, rate: float, backend: str, res: int, **extra) -> dict:
    row = dict(device=device, kind="loader", name=name, images_per_s=rate, source="measured")
    return row | dict(date="x", backend=backend, encoding="jpg", resolution=res) | extra


TABLE = parse_table(
    {
        "default_gpu": "gpu",
        "default_cpu": "cpu",
        "devices": {"gpu": _device(True, "launch"), "cpu": _device(False)},
        "rows": [
            _model("gpu", "big-224", 400.0, 224, 300e6, 400e6, cohort=8),
            _model("gpu", "tiny-32", 1000.0, 32, 1e6, 2e6),
            _model("cpu", "big-224", 400.0, 224, 300e6, 400e6),
            _loader("gpu", "jpeg-224", 100.0, "ffcv", 224),
            _loader("gpu", "memory-224", 0.0, "memory", 224, inline=True),
            _loader("cpu", "jpeg-224", 100.0, "ffcv", 224, source="assumed"),
            _loader("cpu", "memory-64", 1000.0, "memory", 64),
        ],
    }
)


def _work(overlap: bool, rate: float = 400.0, loader: float = 100.0, n: int = 4, **extra) -> Work:
    values = dict(train_images=1000, test_images=0, epochs=1, rates=np.full(n, rate))
    values |= dict(loader=loader, overlap=overlap, member_overhead=0.0) | extra
    return Work(**values)


def test_cohorts_hold_one_key_and_at_most_k_items_in_order() -> None:
    items = [(a, 0) for a in range(5)] + [(a, 1) for a in range(2)]
    groups = cohorts(items, lambda item: item[1], 2)
    assert [len(g) for g in groups] == [2, 2, 1, 2]
    assert [{s for _, s in g} for g in groups] == [{0}, {0}, {0}, {1}]
    with pytest.raises(ValueError, match="cohort size must be >= 1, got 0"):
        cohorts(items, lambda item: item[1], 0)


def test_data_is_counted_once_per_cohort_and_compute_per_member() -> None:
    work = _work(overlap=False)
    assert work.data_seconds == 10.0  # 1,000 images at 100/s, for the whole cohort
    assert list(work.member_seconds([0, 1, 2, 3])) == [2.5] * 4  # 1,000 at 400/s, each
    assert work.cohort_seconds([0, 1, 2, 3]) == 20.0  # 10 + 4 x 2.5
    assert work.cohort_seconds([0]) == 12.5  # a cell alone loads its own images


def test_an_overlapping_device_takes_the_slower_of_data_and_compute_a_serial_one_both() -> None:
    assert _work(overlap=True).cohort_seconds([0, 1]) == 10.0  # max(10, 5)
    assert _work(overlap=False).cohort_seconds([0, 1]) == 15.0  # 10 + 5


def test_evaluation_loads_the_test_set_once_and_costs_a_third_of_a_step_per_member() -> None:
    work = _work(overlap=False, test_images=300)
    assert work.data_seconds == pytest.approx(13.0)  # (1,000 + 300) / 100
    assert work.member_seconds([0])[0] == pytest.approx(2.75)  # (1,000 + 100) / 400


def test_each_extra_member_costs_the_devices_overhead_on_compute() -> None:
    work = _work(overlap=False, member_overhead=0.1)
    assert work.cohort_seconds([0, 1, 2]) == pytest.approx(10 + 7.5 * 1.2)


def test_auto_picks_the_smallest_k_from_which_loading_is_hidden() -> None:
    # Loader 100/s, members 400/s summed: from K = 4 the members' steps cover the loading.
    work = _work(overlap=True, n=16)
    assert loader_keeps_up(work) == 4
    assert choose_cohort(work, k_cap=16) == 4
    assert choose_cohort(work, k_cap=3) == 3  # memory allows 3: the most it can


def test_auto_raises_k_to_where_the_rates_were_measured_when_that_costs_no_more() -> None:
    work = _work(overlap=True, n=16)
    assert choose_cohort(work, k_cap=16, k_row=8) == 8
    assert choose_cohort(work, k_cap=6, k_row=8) == 4  # memory stops it below 8


def test_auto_keeps_cells_alone_where_loading_is_cheap_and_members_cost_extra() -> None:
    # The demo on CPU-2: loading 2 % of a cell, stepping members in turn 1 % per member.
    work = _work(overlap=False, rate=2743.0, loader=138198.0, n=24, member_overhead=0.01)
    assert choose_cohort(work, k_cap=16) == 1
    # Where loading is half of a cell (FFCV decoding at 32 px), cohorts pay.
    work = _work(overlap=False, rate=2200.0, loader=2320.0, n=24, member_overhead=0.01)
    assert choose_cohort(work, k_cap=16) > 4
    assert work.cell_seconds(8) < 0.65 * work.cell_seconds(1)


def test_memory_caps_cohorts_by_a_rows_figure_or_the_architectures_activations() -> None:
    gpu = TABLE.device("gpu")  # 10 GiB: 9 usable less 1 reserved
    assert memory_cap(gpu, Memory(0.5, 0.0, True)) == 16
    params, acts = np.array([1e6, 2e6]), np.array([1e6, 4e6])
    eager = member_memory(params, acts, batch=128, element_bytes=2, graphs=False)
    graphs = member_memory(params, acts, batch=128, element_bytes=2, graphs=True)
    state, act = 2e6 * 16 / 2**30, 4e6 * 128 * 2 * 2 / 2**30
    assert (eager.per_member_gb, eager.shared_gb) == pytest.approx((state, act))
    assert graphs.per_member_gb == pytest.approx(state + act)
    assert memory_cap(gpu, eager) == math.floor((8.0 - act) / state)
    assert memory_cap(gpu, graphs) == math.floor(8.0 / (state + act)) == 4
    # A CPU cohort also stays inside the task's memory.
    assert memory_cap(TABLE.device("cpu"), Memory(1.0, 0.0, True), limit_gb=4.0) == 3


def test_a_row_at_the_resolution_prices_the_architectures_it_stands_for() -> None:
    rates = model_rates(TABLE, "gpu", 224, np.array([350e6, 390e6]), lambda r: None)
    assert list(rates.images_per_s) == [400.0, 400.0] and rates.measured
    assert [r.name for r in rates.rows] == ["big-224", "big-224"]


def test_the_same_architectures_at_another_resolution_are_estimated_by_the_devices_bound() -> None:
    at = {224: np.array([350e6]), 32: np.array([7e6])}
    # Launch-bound: no faster at 32 px than measured at 224.
    gpu = model_rates(TABLE, "gpu", 32, at[32], at.__getitem__)
    assert gpu.images_per_s[0] == 400.0 and not gpu.exact[0] and not gpu.measured
    assert gpu.rows[0].name == "big-224"  # not tiny-32: 7 MF is outside its band
    # Compute-bound: faster by the multiply-adds saved.
    cpu = model_rates(TABLE, "cpu", 32, at[32], at.__getitem__)
    assert cpu.images_per_s[0] == pytest.approx(400.0 * 350 / 7)


def test_an_architecture_no_row_stands_for_takes_the_nearest_row_scaled() -> None:
    at = {224: np.array([5e6]), 32: np.array([3e6])}
    rates = model_rates(TABLE, "gpu", 32, at[32], at.__getitem__)
    assert rates.rows[0].name == "tiny-32"  # 3 MF: nearer 1.4 MF than 346 MF
    assert rates.images_per_s[0] == pytest.approx(1000.0 * math.sqrt(2e12) / 3e6)


def test_cuda_graph_rows_price_graph_stepping_and_eager_rows_the_rest() -> None:
    table = parse_table(
        {
            "default_gpu": "gpu",
            "default_cpu": "gpu",
            "devices": {"gpu": _device(True, "launch")},
            "rows": [
                _model("gpu", "net", 400.0, 224, 1e6, 2e6),
                _model("gpu", "net-graphs", 800.0, 224, 1e6, 2e6, cuda_graphs=True),
            ],
        }
    )
    flops = np.array([1.5e6])
    assert (
        model_rates(table, "gpu", 224, flops, lambda r: flops, graphs=True).images_per_s[0] == 800
    )
    assert model_rates(table, "gpu", 224, flops, lambda r: flops).images_per_s[0] == 400


def test_loaders_are_found_by_backend_and_resolution_or_estimated_from_the_nearest() -> None:
    exact = loader_rate(TABLE, "gpu", "ffcv", "jpg", 224)
    assert (exact.images_per_s, exact.measured) == (100.0, True)
    ffcv = loader_rate(TABLE, "gpu", "ffcv", "jpg", 128)  # decoding dominates: unscaled
    assert (ffcv.images_per_s, ffcv.exact) == (100.0, False)
    memory = loader_rate(TABLE, "cpu", "memory", "raw", 32)  # crops: by pixels
    assert memory.images_per_s == pytest.approx(4000.0)
    inline = loader_rate(TABLE, "gpu", "memory", "raw", 32)
    assert math.isinf(inline.images_per_s) and inline.row.inline
    assert not loader_rate(TABLE, "cpu", "ffcv", "jpg", 224).measured  # an assumed row


def test_a_backend_without_a_loader_row_names_the_rows_there_are() -> None:
    table = parse_table(
        {
            "default_gpu": "gpu",
            "default_cpu": "gpu",
            "devices": {"gpu": _device(True)},
            "rows": [_loader("gpu", "m", 1.0, "memory", 32)],
        }
    )
    with pytest.raises(
        ValueError, match="no ffcv loader row for gpu; its loader rows: gpu/loader/m"
    ):
        loader_rate(table, "gpu", "ffcv", "jpg", 32)


def test_an_unknown_device_or_row_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="gpu 'tpu' is not a device kind .*; kinds: gpu, cpu"):
        TABLE.device("tpu")
    with pytest.raises(ValueError, match="no throughput row gpu/loader/png; rows: gpu/model/big"):
        TABLE.row("gpu", "loader", "png")


def test_a_bad_row_names_itself_and_the_problem() -> None:
    data = {
        "default_gpu": "gpu",
        "default_cpu": "gpu",
        "devices": {"gpu": _device(True)},
        "rows": [_model("gpu", "net", 400.0, 224, 2e6, 1e6)],
    }
    with pytest.raises(ValueError, match=r"row 0 \(net\): a model row needs flops = \[lo, hi\]"):
        parse_table(data)
    data["rows"] = [_model("gpu", "net", 400.0, 224, 1e6, 2e6, source="guessed")]
    with pytest.raises(ValueError, match="source must be one of"):
        parse_table(data)


def test_the_shipped_table_holds_the_measured_h200_and_cpu_rows_and_an_assumed_v100() -> None:
    table = load_table()
    rate = {r.key: (r.images_per_s, r.source, r.date) for r in table.rows}
    assert rate["h200/loader/ffcv-jpeg-224"] == (4087.1, "measured", "2026-12-04")
    assert rate["h200/model/paper-224"] == (4853.6, "measured", "2026-12-04")
    assert rate["h200/model/paper-224-graphs"] == (9742.0, "measured", "2026-12-04")
    assert table.row("h200", "model", "paper-224-graphs").cuda_graphs
    cpu = {
        "ffcv-jpeg-64": 1595.0,
        "ffcv-jpeg-128": 1490.0,
        "ffcv-jpeg-rrc-32": 2320.0,
        "memory-64": 26452.0,
        "anynet-small-64": 171.0,
        "anynet-small-128": 35.0,
        "demo-32": 2200.0,
    }
    for name, value in cpu.items():
        kind = "loader" if name.startswith(("ffcv", "memory")) else "model"
        assert rate[f"cpu-2/{kind}/{name}"] == (value, "measured", "2026-12-04")
    assert {r.source for r in table.rows if r.device == "v100"} == {"assumed"}
    assert table.devices["h200"].overlap and not table.devices["cpu-2"].overlap
    assert (table.default_gpu, table.default_cpu) == ("v100", "cpu-2")
