"""Design spaces: names, overrides, published ranges and pycls's distributions."""

import itertools
import math

import numpy as np
import pytest

from anynet.arch import Architecture
from anynet.spaces import SPACE_NAMES, AnyNetSpace, RegNetSpace, get_space, regnet_stages

N = 20_000


def _draw(space, n=N, seed=0):
    return space.draw(np.random.default_rng(seed), n)


def test_space_names_are_the_five_anynetx_and_two_regnet_spaces():
    assert SPACE_NAMES == (
        "anynetx_a",
        "anynetx_b",
        "anynetx_c",
        "anynetx_d",
        "anynetx_e",
        "regnetx",
        "regnety",
    )


def test_anynetx_a_has_the_published_ranges():
    space = get_space("anynetx_a")
    assert isinstance(space, AnyNetSpace)
    assert (space.stages, space.min_depth, space.max_depth) == (4, 1, 16)
    assert (space.min_width, space.max_width, space.width_step) == (8, 1024, 8)
    assert space.bottleneck_ratios == (1.0, 2.0, 4.0)
    assert space.group_widths == (1, 2, 4, 8, 16, 32)
    assert (space.stem, space.stem_width, space.se_ratio) == ("imagenet", 32, 0.0)


def test_regnet_spaces_have_pycls_ranges_and_regnety_adds_se():
    x, y = get_space("regnetx"), get_space("regnety")
    assert isinstance(x, RegNetSpace)
    assert (x.min_depth, x.max_depth, x.min_w0, x.max_w0) == (12, 28, 8, 256)
    assert (x.min_wa, x.max_wa, x.min_wm, x.max_wm) == (8.0, 256.0, 2.0, 3.0)
    assert (x.min_group_width, x.max_group_width, x.bottleneck_ratios) == (1, 32, (1.0,))
    assert (x.se_ratio, y.se_ratio) == (0.0, 0.25)


def test_unknown_space_name_lists_the_valid_ones():
    with pytest.raises(
        ValueError,
        match="unknown design space 'anynetx_f'; valid names are \\['anynetx_a', .*'regnety'\\]",
    ):
        get_space("anynetx_f")


def test_unknown_override_lists_the_valid_ones():
    with pytest.raises(
        ValueError,
        match="unknown option\\(s\\) \\['max_dept'\\] for design "
        "space 'anynetx_a'; valid: \\['stages', 'min_depth'",
    ):
        get_space("anynetx_a", max_dept=3)


def test_the_identity_of_a_space_is_not_an_override():
    with pytest.raises(ValueError, match="unknown option\\(s\\) \\['increasing_widths'\\]"):
        get_space("anynetx_a", increasing_widths=True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_depth": 0}, "need 1 <= min_depth <= max_depth"),
        ({"min_width": 256, "max_width": 128}, "min_width <= max_width"),
        ({"max_width": 100}, "max_width must be a multiple of 8, got 100"),
        ({"stem": "tiny"}, "unknown stem 'tiny'"),
        ({"stages": 0}, "stages must be >= 1"),
        ({"bottleneck_ratios": (1, 0.3)}, "1/b an integer"),
        ({"max_depth": 2.5}, "max_depth must be an integer, got 2.5"),
        ({"group_widths": "8"}, "group_widths must be a number"),
    ],
)
def test_invalid_overrides_are_rejected_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_space("anynetx_a", **overrides)


def test_overrides_accept_lists_and_single_values_for_tuples():
    space = get_space("anynetx_c", group_widths=[8, 16], bottleneck_ratios=1, max_depth=3)
    assert (space.group_widths, space.bottleneck_ratios, space.max_depth) == ((8, 16), (1.0,), 3)


def test_small_image_overrides_draw_inside_their_ranges():
    space = get_space("anynetx_a", max_depth=3, max_width=128, stem="small", stages=3)
    draws = _draw(space, 2000)
    assert draws.depths.shape == (2000, 3)
    assert draws.depths.min() == 1 and draws.depths.max() == 3
    assert draws.widths.min() == 8 and draws.widths.max() == 128
    assert set(np.unique(draws.widths % 8)) == {0}


def test_depths_are_log_uniform_as_pycls():
    # f log-uniform on (0.5, 16], rounded up: P(d) = log(d / max(d - 1, 0.5)) / log(32).
    depths = _draw(get_space("anynetx_a")).depths.ravel()
    for d in (1, 2, 5, 16):
        expected = math.log(d / max(d - 1, 0.5)) / math.log(32)
        assert abs(np.mean(depths == d) - expected) < 0.01


def test_widths_are_log_uniform_multiples_of_8_as_pycls():
    widths = _draw(get_space("anynetx_a")).widths.ravel()
    assert abs(np.mean(widths == 8) - math.log(8 / 4) / math.log(1024 / 4)) < 0.01
    assert abs(np.mean(widths <= 128) - math.log(128 / 4) / math.log(1024 / 4)) < 0.01


def test_bottleneck_ratios_and_group_widths_are_uniform_over_their_values():
    draws = _draw(get_space("anynetx_a"))
    for value in (1.0, 2.0, 4.0):
        assert abs(np.mean(draws.bottleneck_ratios == value) - 1 / 3) < 0.01
    for value in (1, 2, 4, 8, 16, 32):
        assert abs(np.mean(draws.group_widths == value) - 1 / 6) < 0.01


def test_anynetx_a_draws_each_stage_independently():
    draws = _draw(get_space("anynetx_a"), 2000)
    assert np.mean((draws.bottleneck_ratios == draws.bottleneck_ratios[:, :1]).all(1)) < 0.1
    assert np.mean((draws.group_widths == draws.group_widths[:, :1]).all(1)) < 0.1


@pytest.mark.parametrize("name", ["anynetx_b", "anynetx_c", "anynetx_d", "anynetx_e"])
def test_b_and_later_share_one_bottleneck_ratio(name):
    draws = _draw(get_space(name), 2000)
    assert (draws.bottleneck_ratios == draws.bottleneck_ratios[:, :1]).all()
    assert set(np.unique(draws.bottleneck_ratios[:, 0])) == {1.0, 2.0, 4.0}


@pytest.mark.parametrize("name", ["anynetx_c", "anynetx_d", "anynetx_e"])
def test_c_and_later_share_one_group_width(name):
    draws = _draw(get_space(name), 2000)
    assert (draws.group_widths == draws.group_widths[:, :1]).all()


@pytest.mark.parametrize("name", ["anynetx_d", "anynetx_e"])
def test_d_and_e_draw_non_decreasing_widths(name):
    widths = _draw(get_space(name), 5000).widths
    assert (np.diff(widths, axis=1) >= 0).all()
    assert len(np.unique(widths, axis=0)) > 1000


def test_e_draws_non_decreasing_depths_and_d_does_not():
    assert (np.diff(_draw(get_space("anynetx_e"), 5000).depths, axis=1) >= 0).all()
    assert (np.diff(_draw(get_space("anynetx_d"), 5000).depths, axis=1) < 0).any()


def test_d_is_a_conditioned_on_non_decreasing_widths_not_a_sorted():
    # Exact conditional law of 2 log-uniform widths in {8, 16, 24, 32} given w1 <= w2,
    # against the draws: sorting instead would double the weight of unequal pairs.
    space = get_space("anynetx_d", stages=2, max_width=32)
    widths = _draw(space, 40_000).widths
    values = [8, 16, 24, 32]
    p = {v: math.log(v / max(v - 8, 4)) / math.log(32 / 4) for v in values}
    pairs = [(a, b) for a, b in itertools.product(values, values) if a <= b]
    total = sum(p[a] * p[b] for a, b in pairs)
    for a, b in pairs:
        seen = np.mean((widths[:, 0] == a) & (widths[:, 1] == b))
        assert abs(seen - p[a] * p[b] / total) < 0.01, (a, b)


def test_regnet_stages_reproduce_pycls_generate_regnet():
    assert regnet_stages(24, 36.44, 2.49, 13) == ((1, 1, 4, 7), (24, 56, 152, 368))
    assert regnet_stages(24, 24.48, 2.54, 22) == ((1, 2, 7, 12), (24, 64, 152, 392))


def test_regnet_stages_rejects_invalid_parameters():
    with pytest.raises(ValueError, match="w0 > 0 divisible by 8"):
        regnet_stages(20, 36.44, 2.49, 13)


def test_regnet_draws_keep_only_exactly_four_stage_networks():
    space = get_space("regnetx")
    draws = _draw(space, 5000)
    valid = draws.valid
    assert 0.05 < valid.mean() < 0.9
    total = draws.depths[valid].sum(axis=1)
    assert total.min() >= 12 and total.max() <= 28
    assert (np.diff(draws.widths[valid], axis=1) > 0).all()
    assert (draws.widths[valid] % 8 == 0).all()


def test_regnet_group_widths_are_powers_of_2_or_multiples_of_8_as_pycls():
    groups = _draw(get_space("regnetx")).group_widths[:, 0]
    assert set(np.unique(groups)) == {1, 2, 4, 8, 16, 24, 32}
    # A power of 2 from {1..32} uniformly; from 8 on, replaced by a log-uniform multiple of 8.
    assert abs(np.mean(groups == 1) - 1 / 6) < 0.01
    assert abs(np.mean(groups == 8) - 0.5 * math.log(8 / 4) / math.log(32 / 4)) < 0.01


def test_contains_checks_an_adjusted_architecture_against_the_space():
    e = get_space("anynetx_e")
    inside = Architecture((1, 2, 2, 3), (16, 32, 64, 128), (2,) * 4, (8,) * 4)
    assert e.contains(inside)
    assert not e.contains(Architecture((3, 2, 2, 3), (16, 32, 64, 128), (2,) * 4, (8,) * 4))
    assert not e.contains(Architecture((1, 2, 2, 3), (32, 16, 64, 128), (2,) * 4, (8,) * 4))
    # A group width capped at its bottleneck width (8 / 2 = 4 < 8) still counts as shared.
    assert e.contains(Architecture((1, 2, 2, 3), (8, 32, 64, 128), (2,) * 4, (4, 8, 8, 8)))
    assert not e.contains(Architecture((1, 2, 2, 3), (16, 32, 64, 128), (2,) * 4, (4, 8, 8, 8)))
