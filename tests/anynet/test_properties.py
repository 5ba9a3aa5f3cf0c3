"""Properties over small spaces: whatever the space, seed and resolution, every sampled
architecture lies in its space, builds, and maps images to logits."""

import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anynet.complexity import complexity
from anynet.model import build_model
from anynet.sampler import sample
from anynet.spaces import get_space

# CI draws the same examples every run (a red build must be reproducible); elsewhere each
# run explores new ones.
SETTINGS = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI", "").lower() == "true",
)


@st.composite
def small_spaces(draw):
    name = draw(st.sampled_from(["anynetx_a", "anynetx_b", "anynetx_c", "anynetx_d", "anynetx_e"]))
    return get_space(
        name,
        stages=draw(st.integers(1, 3)),
        max_depth=draw(st.integers(1, 2)),
        max_width=draw(st.sampled_from([32, 48, 64])),
        stem=draw(st.sampled_from(["small", "imagenet"])),
        stem_width=draw(st.sampled_from([8, 16])),
        se_ratio=draw(st.sampled_from([0.0, 0.25])),
    )


@SETTINGS
@given(space=small_spaces(), seed=st.integers(0, 2**32), resolution=st.integers(8, 40))
def test_sampled_architectures_lie_in_their_space_and_map_images_to_logits(space, seed, resolution):
    samples = sample(space, 3, seed=seed, resolution=resolution, num_classes=7)
    torch.manual_seed(0)
    for s in samples:
        arch = s.arch
        assert space.contains(arch)
        assert arch.num_stages == space.stages
        assert all(space.min_depth <= d <= space.max_depth for d in arch.depths)
        assert all(w % 8 == 0 and 8 <= w <= space.max_width for w in arch.widths)
        assert all(
            wb % g == 0 for wb, g in zip(arch.bottleneck_widths, arch.group_widths, strict=True)
        )
        if space.shared_bottleneck:
            assert len(set(arch.bottleneck_ratios)) == 1
        if space.increasing_widths:
            assert list(arch.widths) == sorted(arch.widths)
        if space.increasing_depths:
            assert list(arch.depths) == sorted(arch.depths)
        model = build_model(arch, 7).eval()
        with torch.no_grad():
            logits = model(torch.randn(2, 3, resolution, resolution))
        assert tuple(logits.shape) == (2, 7)
        assert bool(torch.isfinite(logits).all())


@SETTINGS
@given(
    space=small_spaces(), seed=st.integers(0, 2**32), n=st.integers(1, 5), extra=st.integers(1, 10)
)
def test_any_prefix_of_a_seeded_list_is_the_shorter_list(space, seed, n, extra):
    longer = sample(space, n + extra, seed=seed, resolution=16, max_draws=50_000)
    assert sample(space, n, seed=seed, resolution=16) == longer[:n]


@SETTINGS
@given(space=small_spaces(), seed=st.integers(0, 2**32))
def test_flops_ranges_hold_for_every_sample(space, seed):
    everything = sample(space, 10, seed=seed, resolution=32, num_classes=3)
    flops = sorted(complexity(s.arch, 32, 3).flops for s in everything)
    lo, hi = flops[2], flops[7]
    for s in sample(space, 4, seed=seed, resolution=32, num_classes=3, flops=(lo, hi)):
        assert lo <= complexity(s.arch, 32, 3).flops <= hi
