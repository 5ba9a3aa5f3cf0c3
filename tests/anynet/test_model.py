"""The AnyNet module: structure, shapes, initialisation, channels_last."""

import dataclasses

import pytest
import torch
from torch import nn

from anynet.arch import Architecture
from anynet.model import build_model

ARCH = Architecture((1, 2), (16, 32), (1, 2), (8, 8), stem_width=8, stem="small")


def _model(arch=ARCH, classes=5, **kwargs):
    torch.manual_seed(0)
    return build_model(arch, classes, **kwargs)


def test_maps_images_to_logits_and_halves_the_size_per_stage():
    model = _model().eval()
    x = torch.randn(2, 3, 28, 28)
    features = model.s2(model.s1(model.stem(x)))
    assert tuple(features.shape) == (2, 32, 7, 7)
    assert tuple(model(x).shape) == (2, 5)


def test_imagenet_stem_strides_by_two():
    model = _model(dataclasses.replace(ARCH, stem="imagenet")).eval()
    assert tuple(model.stem(torch.randn(1, 3, 28, 28)).shape) == (1, 8, 14, 14)


def test_in_channels_sets_the_stem_input():
    model = _model(in_channels=1).eval()
    assert model.stem.conv.in_channels == 1
    assert tuple(model(torch.randn(3, 1, 16, 16)).shape) == (3, 5)


def test_blocks_follow_the_architecture():
    model = _model()
    first, second = model.s2[0], model.s2[1]
    # width 32 with ratio 2 has a 16-channel bottleneck in groups of 8: 2 groups.
    assert (first.f.b.in_channels, first.f.b.groups, first.f.b.stride) == (16, 2, (2, 2))
    assert first.proj_block and (first.proj.in_channels, first.proj.stride) == (16, (2, 2))
    assert not second.proj_block and second.f.b.stride == (1, 1)
    assert len(model.s1) == 1 and len(model.s2) == 2


def test_se_squeezes_to_the_ratio_of_the_block_input_width():
    model = _model(dataclasses.replace(ARCH, se_ratio=0.25))
    # Stage 2's first block reads 16 channels (16 * 0.25 = 4), the next reads 32 (8).
    assert model.s2[0].f.se.f_ex[0].out_channels == 4
    assert model.s2[1].f.se.f_ex[0].out_channels == 8
    assert model.s2[1].f.se.f_ex[0].in_channels == 16
    assert not any(hasattr(b.f, "se") for b in _model().s2)


def test_initialisation_is_pycls_resnet_style():
    model = _model(dataclasses.replace(ARCH, widths=(64, 256), group_widths=(8, 8)), 1000)
    conv = model.s2[1].f.a  # 1x1, 128 output channels: std sqrt(2 / 128) = 0.125
    assert abs(conv.weight.std().item() - 0.125) < 0.01
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all()) and bool((m.bias == 0).all()) for m in bns)
    assert abs(model.head.fc.weight.std().item() - 0.01) < 0.001
    assert bool((model.head.fc.bias == 0).all())


def test_zero_init_final_gamma_zeroes_only_each_blocks_last_bn():
    model = _model(zero_init_final_gamma=True)
    assert bool((model.s2[0].f.c_bn.weight == 0).all())
    assert bool((model.s2[0].f.b_bn.weight == 1).all())
    assert bool((model.s2[0].bn.weight == 1).all())


def test_same_seed_gives_the_same_weights():
    a, b = _model().state_dict(), _model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_channels_last_gives_the_same_logits():
    model = _model().eval()
    x = torch.randn(2, 3, 20, 20)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)


def test_trains_one_step():
    model = _model()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_a_raw_architecture_must_be_adjusted_first():
    raw = Architecture.raw(depths=(1,), widths=(24,), bottleneck_ratios=(1,), group_widths=(16,))
    with pytest.raises(ValueError, match="build arch.adjusted\\(\\) instead"):
        build_model(raw, 10)


def test_bad_class_counts_are_rejected():
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        build_model(ARCH, 0)
