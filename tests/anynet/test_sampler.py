"""The sampler: constraints, distinctness, seeds, prefix stability, errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from anynet.arch import Architecture
from anynet.complexity import complexity
from anynet.sampler import sample
from anynet.spaces import get_space

ROOT = Path(__file__).resolve().parents[2]
SMALL = get_space("anynetx_a", max_depth=3, max_width=128, stem="small")
SMALL_FLOPS = (2e6, 6e6)


def _names(samples):
    return [s.arch.name for s in samples]


def test_every_sample_meets_all_complexity_ranges_at_its_resolution():
    ranges = {"flops": (3e6, 5e6), "params": (20e3, 80e3), "acts": (50e3, 150e3)}
    samples = sample(SMALL, 40, resolution=28, num_classes=10, **ranges)
    assert len(samples) == 40
    for s in samples:
        cx = complexity(s.arch, 28, 10)
        for key, (lo, hi) in ranges.items():
            assert lo <= getattr(cx, key) <= hi


def test_the_paper_regime_gives_architectures_of_360_to_400_mf_at_224():
    samples = sample("anynetx_a", 50, flops=(360e6, 400e6))
    flops = [complexity(s.arch).flops for s in samples]
    assert min(flops) >= 360e6 and max(flops) <= 400e6


def test_samples_are_distinct_adjusted_architectures():
    samples = sample(get_space("anynetx_a", max_depth=2, max_width=32, stages=2), 60)
    assert len({s.arch for s in samples}) == 60


def test_arch_is_the_adjusted_sampled_draw():
    samples = sample("anynetx_a", 200, seed=5)
    for s in samples:
        assert s.arch == s.sampled.adjusted()
        assert s.arch.compatible
    assert any(s.sampled != s.arch for s in samples)
    assert any(not s.sampled.compatible for s in samples)


def test_draw_indices_increase_and_count_from_zero():
    draws = [s.draw for s in sample(SMALL, 30, resolution=28, flops=SMALL_FLOPS)]
    assert draws == sorted(set(draws)) and draws[0] >= 0


def test_same_seed_gives_the_same_list_and_another_seed_another():
    a = sample(SMALL, 25, seed=7, resolution=28, flops=SMALL_FLOPS)
    b = sample(SMALL, 25, seed=7, resolution=28, flops=SMALL_FLOPS)
    c = sample(SMALL, 25, seed=8, resolution=28, flops=SMALL_FLOPS)
    assert a == b
    assert _names(a) != _names(c)


def test_asking_for_more_extends_the_same_list():
    few = sample("anynetx_a", 30, seed=3, flops=(360e6, 400e6))
    many = sample("anynetx_a", 300, seed=3, flops=(360e6, 400e6))
    assert many[:30] == few


def test_prefix_stability_holds_across_block_boundaries():
    # 1 MF-3 MF at 28 px accepts most draws, so 3000 samples span several blocks.
    few = sample(SMALL, 1000, seed=1, resolution=28, flops=(1e6, 3e6))
    many = sample(SMALL, 3000, seed=1, resolution=28, flops=(1e6, 3e6))
    assert many[-1].draw > 4096
    assert many[:1000] == few


def test_another_process_samples_the_same_architectures():
    code = (
        "import json; from anynet.sampler import sample; "
        "print(json.dumps([s.arch.to_dict() for s in "
        "sample('anynetx_e', 20, seed=42, flops=(360e6, 400e6))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    theirs = [Architecture.from_dict(d) for d in json.loads(out)]
    ours = [s.arch for s in sample("anynetx_e", 20, seed=42, flops=(360e6, 400e6))]
    assert theirs == ours


def test_seeded_list_is_pinned():
    # Guards the stream itself: a change to the draws or their order changes these names.
    names = _names(sample("anynetx_a", 3, seed=0, flops=(360e6, 400e6)))
    assert names == [
        "d2.6.1.14-w32.8.128.688-b2.4.2.2-g8.2.32.4",
        "d4.1.2.1-w64.64.48.128-b1.4.4.4-g32.8.1.16",
        "d2.4.4.2-w144.176.96.40-b2.2.2.1-g8.8.8.4",
    ]


@pytest.mark.parametrize(
    "name", ["anynetx_b", "anynetx_c", "anynetx_d", "anynetx_e", "regnetx", "regnety"]
)
def test_every_space_samples_architectures_it_contains(name):
    space = get_space(name)
    samples = sample(space, 20, seed=2, flops=(360e6, 400e6))
    assert all(space.contains(s.arch) for s in samples)


def test_an_empty_range_reports_draws_tried_and_the_nearest_miss():
    with pytest.raises(ValueError) as err:
        sample(SMALL, 5, resolution=28, flops=(1e9, 2e9), max_draws=10_000)
    message = str(err.value)
    assert "found 0 distinct architecture(s) of the 5 asked for in 10,000 draws" in message
    assert "Nearest draw: flops" in message and "vs [1,000,000,000, 2,000,000,000]" in message


def test_a_space_smaller_than_n_is_reported():
    tiny = get_space(
        "anynetx_a", stages=1, max_depth=1, max_width=16, bottleneck_ratios=1, group_widths=8
    )
    with pytest.raises(ValueError, match="found 2 distinct architecture\\(s\\) of the 3"):
        sample(tiny, 3, max_draws=10_000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n must be an integer >= 0"),
        ({"resolution": 0}, "resolution must be an integer >= 1"),
        ({"flops": (5e6, 1e6)}, "flops range must satisfy 0 <= lo <= hi"),
        ({"params": 5}, "params must be a \\(lo, hi\\) pair"),
        ({"max_draws": 0}, "max_draws must be a positive integer"),
        ({"seed": -3}, "seed must be an integer >= 0"),
    ],
)
def test_bad_arguments_are_rejected_before_sampling(kwargs, message):
    args = {"n": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample(SMALL, **args)


def test_a_space_name_is_accepted_in_place_of_a_space():
    assert sample("anynetx_c", 5, seed=4) == sample(get_space("anynetx_c"), 5, seed=4)
