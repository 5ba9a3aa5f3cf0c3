"""benchmarks/gpu_cohort.py and gpu_variants.py on the CPU: the rows' bookkeeping, and variant
members that step exactly as hpc's own on a device without streams or graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anynet.arch import Architecture
from benchmarks.gpu_cohort import ArchSet, preset_archs, run_cohort
from benchmarks.gpu_common import EpochClock, ListLoader
from benchmarks.gpu_variants import VARIANTS, member_class
from hpc.cohort import train_cohort
from hpc.recipe import Recipe
from hpc.train import CellRun

ARCHS = [
    Architecture(depths=(1, 1), widths=(8, 16), bottleneck_ratios=(1.0, 1.0),
                 group_widths=(8, 8), stem_width=8, stem="small"),
    Architecture(depths=(2, 1), widths=(16, 16), bottleneck_ratios=(1.0, 1.0),
                 group_widths=(8, 8), stem_width=8, stem="small"),
]  # fmt: skip
CPU = torch.device("cpu")


def batches(n: int = 3, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.randn(size, 3, 8, 8, generator=gen), torch.randint(0, 4, (size,), generator=gen))
        for _ in range(n)
    ]


def curves(variant: str) -> list[dict[str, np.ndarray]]:
    data = batches()
    recipe = Recipe(epochs=2, batch_size=8, precision="fp32", channels_last=False)
    cls = member_class(variant)
    runs = [
        cls(a, recipe, seed=0, num_classes=4, steps_per_epoch=3, init_seed=i)
        for i, a in enumerate(ARCHS)
    ]
    train_cohort(runs, ListLoader(data), data[:1], seed=0)
    return [r.outcome().curves for r in runs]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_train_as_hpc_does_on_the_cpu(variant: str) -> None:
    torch.set_num_threads(1)
    for ours, hpc in zip(curves(variant), curves("eager"), strict=True):
        for name in ("train_loss", "train_top1_err", "test_top1_err"):
            np.testing.assert_array_equal(ours[name], hpc[name])


def test_member_class_names_the_valid_variants() -> None:
    assert member_class("eager") is CellRun
    with pytest.raises(ValueError, match="valid: eager, streams, graphs, graphs\\+streams"):
        member_class("threads")


def test_epoch_clock_times_every_epoch_and_counts_its_images() -> None:
    clock = EpochClock(ListLoader(batches(n=3, size=8)), CPU)
    for epoch in range(2):
        assert sum(len(y) for _, y in clock.epoch(0, epoch)) == 24
    assert clock.images == [24, 24]
    assert len(clock.seconds) == 2 and all(s > 0 for s in clock.seconds)


def test_presets_give_their_populations_first_architectures() -> None:
    paper, design = preset_archs("paper", 3)
    assert design["flops"] == [340_000_000, 400_000_000]
    assert len(set(paper)) == 3 and all(a.num_stages == 4 for a in paper)
    demo, design = preset_archs("demo", 3)
    assert all(a.num_stages == 3 and a.stem_width == 16 for a in demo)
    assert preset_archs("demo", 2)[0] == demo[:2]  # prefix-stable, as the study samples


def test_cohort_row_counts_members_images_and_flops() -> None:
    torch.set_num_threads(1)
    data = batches(n=2, size=8)
    s = ArchSet("tiny", ARCHS, 8, 4, ListLoader(data), data[:1], 0.1, 0.1, 1.0)
    row = run_cohort(s, 2, CPU, {"spec": None, "matmul": 1e12})
    assert (row["k"], row["images_per_epoch"], len(row["epoch_s"])) == (2, 16, 2)
    assert row["sum_images_per_s"] == pytest.approx(2 * row["member_images_per_s"])
    assert row["flop_per_s"] == pytest.approx(6 * sum(s.flops(2)) * 16 / row["steady_s"])
    assert (row["failed"], row["diverged"], len(row["final_loss"])) == ([], 0, 2)
