"""The architecture record: validation, identity, serialisation, the compatibility rule."""

import dataclasses
import json
import pickle

import numpy as np
import pytest

from anynet.arch import Architecture, adjust_widths

REGNETX_200MF = Architecture((1, 1, 4, 7), (24, 56, 152, 368), (1, 1, 1, 1), (8, 8, 8, 8))


def test_defaults_are_imagenet_stem_of_width_32_without_se():
    assert (REGNETX_200MF.stem, REGNETX_200MF.stem_width, REGNETX_200MF.se_ratio) == (
        "imagenet",
        32,
        0.0,
    )


def test_lists_and_numpy_values_become_tuples_of_python_numbers():
    arch = Architecture(
        np.array([1, 2]), [np.int64(16), 32], np.array([1.0, 2.0]), [np.int32(8), 16]
    )
    assert arch.depths == (1, 2) and type(arch.depths[0]) is int
    assert arch.bottleneck_ratios == (1.0, 2.0) and type(arch.bottleneck_ratios[0]) is float
    assert arch.group_widths == (8, 16) and type(arch.group_widths[0]) is int


def test_equal_architectures_hash_equal_whatever_they_were_built_from():
    a = Architecture([1, 1, 4, 7], [24, 56, 152, 368], [1, 1, 1, 1], [8, 8, 8, 8])
    assert a == REGNETX_200MF
    assert len({a, REGNETX_200MF}) == 1


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGNETX_200MF.widths = (8, 8, 8, 8)


def test_any_number_of_stages_is_allowed():
    arch = Architecture((1, 2), (16, 32), (1, 1), (8, 8))
    assert arch.num_stages == 2


def test_unequal_stage_tuples_are_rejected_with_their_lengths():
    with pytest.raises(ValueError, match="equal lengths.*'depths': 3.*'widths': 4"):
        Architecture((1, 1, 4), (24, 56, 152, 368), (1, 1, 1, 1), (8, 8, 8, 8))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("depths", (1, 0, 4, 7), "stage 2: depths must be positive, got 0"),
        ("widths", (24, 56, -8, 368), "stage 3: widths must be positive, got -8"),
        ("bottleneck_ratios", (1, 1, 1, 0), "stage 4: bottleneck ratio must be positive"),
        ("stem", "cifar", "unknown stem 'cifar'; valid stems are \\['imagenet', 'small'\\]"),
        ("se_ratio", -0.25, "se_ratio must be >= 0"),
        ("stem_width", 0, "stem_width must be positive"),
        ("widths", (24, 56.5, 152, 368), "widths: expected an integer, got 56.5"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(REGNETX_200MF, **{field: value})


def test_a_group_width_that_does_not_divide_the_bottleneck_width_names_stage_and_values():
    with pytest.raises(
        ValueError,
        match="stage 1: group width 16 does not divide the "
        "bottleneck width 24 \\(width 24 / bottleneck ratio 1\\)",
    ):
        Architecture((1, 1), (24, 32), (1, 1), (16, 16))


def test_bottleneck_width_is_width_over_ratio():
    arch = Architecture((1, 1), (64, 48), (4, 2), (16, 8))
    assert arch.bottleneck_widths == (16, 24)


def test_name_writes_shared_values_once():
    assert REGNETX_200MF.name == "d1.1.4.7-w24.56.152.368-b1-g8"


def test_name_lists_per_stage_values_and_the_non_default_options():
    arch = Architecture(
        (2, 3), (64, 128), (1, 2), (8, 16), stem_width=16, stem="small", se_ratio=0.25
    )
    assert arch.name == "d2.3-w64.128-b1.2-g8.16-small-s16-se0.25"


def test_to_dict_is_plain_json_and_round_trips():
    arch = dataclasses.replace(REGNETX_200MF, se_ratio=0.25, stem="small")
    data = json.loads(json.dumps(arch.to_dict()))
    assert data == {
        "depths": [1, 1, 4, 7],
        "widths": [24, 56, 152, 368],
        "bottleneck_ratios": [1.0, 1.0, 1.0, 1.0],
        "group_widths": [8, 8, 8, 8],
        "stem_width": 32,
        "stem": "small",
        "se_ratio": 0.25,
    }
    assert Architecture.from_dict(data) == arch


def test_from_dict_fills_defaults_and_rejects_unknown_or_missing_keys():
    data = REGNETX_200MF.to_dict()
    for key in ("stem_width", "stem", "se_ratio"):
        del data[key]
    assert Architecture.from_dict(data) == REGNETX_200MF
    with pytest.raises(ValueError, match="unknown architecture keys \\['depth'\\]; valid keys"):
        Architecture.from_dict({**data, "depth": 3})
    del data["widths"]
    with pytest.raises(ValueError, match="missing keys \\['widths'\\]"):
        Architecture.from_dict(data)


def test_a_raw_draw_may_break_the_group_rule_but_not_the_structure():
    raw = Architecture.raw(depths=(1,), widths=(24,), bottleneck_ratios=(1,), group_widths=(16,))
    assert not raw.compatible
    assert Architecture.from_dict(raw.to_dict(), raw=True) == raw
    with pytest.raises(ValueError, match="equal lengths"):
        Architecture.raw(depths=(1, 2), widths=(24,), bottleneck_ratios=(1,), group_widths=(16,))


def test_adjusted_rounds_the_bottleneck_width_to_a_multiple_of_the_group_width():
    # 24 / 16 = 1.5 rounds (half to even) to 2 groups of 16: width 32.
    raw = Architecture.raw(depths=(1,), widths=(24,), bottleneck_ratios=(1,), group_widths=(16,))
    assert raw.adjusted().widths == (32,)
    assert raw.adjusted().group_widths == (16,)


def test_adjusted_caps_the_group_width_at_the_bottleneck_width():
    # width 8 with ratio 4 has a bottleneck of 2 channels: groups of 32 become groups of 2.
    raw = Architecture.raw(depths=(1,), widths=(8,), bottleneck_ratios=(4,), group_widths=(32,))
    adjusted = raw.adjusted()
    assert (adjusted.widths, adjusted.group_widths, adjusted.bottleneck_widths) == (
        (8,),
        (2,),
        (2,),
    )


def test_adjusted_uses_lcm_of_group_and_multiplier_for_inverted_bottlenecks():
    # b = 0.5 is multiplier 2: the 3x3 conv has 2w channels, a multiple of lcm(g, 2).
    widths, groups = adjust_widths([20], [0.5], [3])
    assert (widths.tolist(), groups.tolist()) == ([21], [3])
    assert Architecture((1,), (21,), (0.5,), (3,)).bottleneck_widths == (42,)


def test_adjusted_leaves_a_compatible_architecture_unchanged():
    assert REGNETX_200MF.adjusted() == REGNETX_200MF


def test_adjust_widths_works_on_batches():
    widths, groups = adjust_widths([[24, 360], [8, 1016]], [[1, 1], [4, 1]], [[16, 16], [32, 32]])
    assert widths.tolist() == [[32, 352], [8, 1024]]
    assert groups.tolist() == [[16, 16], [2, 32]]


def test_records_survive_pickling_as_job_arguments_do():
    raw = Architecture.raw(depths=(1,), widths=(24,), bottleneck_ratios=(1,), group_widths=(16,))
    for arch in (REGNETX_200MF, raw):
        copy = pickle.loads(pickle.dumps(arch))
        assert copy == arch and hash(copy) == hash(arch)
