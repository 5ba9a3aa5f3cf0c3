"""The cohort cost model: data once per cohort, compute per member, from the throughput table."""

from __future__ import annotations

import pytest

from hpc.scheduling.cost import (
    CellWork,
    best_cohort,
    cohort_cost,
    cohorts_of,
    load_table,
    parse_table,
)

TABLE = parse_table(
    {
        "devices": {"gpu": {"overlap": True}, "cpu": {"overlap": False}},
        "rows": [
            dict(
                device=d,
                kind="loader",
                name="jpeg",
                images_per_s=100.0,
                source="measured",
                date="x",
            )
            for d in ("gpu", "cpu")
        ]
        + [
            dict(device=d, kind="model", name="net", images_per_s=400.0, source=s, date="x")
            for d, s in (("gpu", "measured"), ("cpu", "assumed"))
        ],
    }
)


def _cells(n, seed=0, images=1000):
    return [CellWork("ds", seed, "net", "jpeg", images) for _ in range(n)]


def test_cohorts_hold_one_dataset_and_seed_and_at_most_k_cells():
    groups = cohorts_of(_cells(5) + _cells(2, seed=1), 2)
    assert [len(g) for g in groups] == [2, 2, 1, 2]
    assert [{c.seed for c in g} for g in groups] == [{0}, {0}, {0}, {1}]


def test_data_is_counted_once_per_cohort_and_compute_per_member():
    cost = cohort_cost(_cells(4), 4, "gpu", TABLE)
    assert (cost.data_seconds, cost.compute_seconds, cost.cohorts) == (10.0, 10.0, 1)
    solo = cohort_cost(_cells(4), 1, "gpu", TABLE)
    assert (solo.data_seconds, solo.compute_seconds, solo.cohorts) == (40.0, 10.0, 4)


def test_an_overlapping_device_takes_the_slower_of_data_and_compute_a_serial_one_both():
    assert cohort_cost(_cells(2), 2, "gpu", TABLE).seconds == 10.0  # max(10, 5)
    assert cohort_cost(_cells(2), 2, "cpu", TABLE).seconds == 15.0  # 10 + 5


def test_a_cost_rests_on_measured_rows_only_when_every_row_used_is_measured():
    assert cohort_cost(_cells(2), 2, "gpu", TABLE).measured
    assert not cohort_cost(_cells(2), 2, "cpu", TABLE).measured


def test_auto_picks_the_smallest_k_that_makes_data_keep_up():
    # loader 100/s, model 400/s: from K = 4 on the members' compute covers the loading.
    assert best_cohort(_cells(16), "gpu", TABLE) == 4


def test_an_unknown_row_names_the_rows_there_are():
    with pytest.raises(
        ValueError, match="no throughput row tpu/loader/jpeg; rows: cpu/loader/jpeg"
    ):
        cohort_cost(_cells(1), 1, "tpu", TABLE)


def test_cohort_size_below_one_is_refused():
    with pytest.raises(ValueError, match="cohort size must be >= 1, got 0"):
        cohorts_of(_cells(1), 0)


def test_the_shipped_table_marks_every_h200_row_assumed_until_a_gpu_run():
    table = load_table()
    h200 = [r for (d, _, _), r in table.rows.items() if d == "h200"]
    assert len(h200) == 2 and {r.source for r in h200} == {"assumed"}
    assert table.overlap["h200"] and not table.overlap["cpu-2"]
