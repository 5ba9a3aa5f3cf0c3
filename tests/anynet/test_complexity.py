"""Analytic complexity: pycls's published numbers, and the built modules themselves."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from anynet.arch import Architecture
from anynet.complexity import Complexity, complexity, complexity_batch
from anynet.model import build_model
from anynet.sampler import sample
from anynet.spaces import get_space, regnet_stages

# pycls dev/model_complexity.json (simple ImageNet stem of 32, 224 px, 1000 classes).
PYCLS_GOLDEN = {
    # name: (w0, wa, wm, depth, group width, SE), (flops, params, acts)
    "RegNetX-200MF": ((24, 36.44, 2.49, 13, 8, False), (199040872, 2684792, 2164056)),
    "RegNetY-200MF": ((24, 36.44, 2.49, 13, 8, True), (199519076, 3162996, 2168052)),
    "RegNetX-400MF": ((24, 24.48, 2.54, 22, 16, False), (397678568, 5157512, 3143272)),
}


def test_regnetx_200mf_matches_pycls_published_counts():
    arch = Architecture((1, 1, 4, 7), (24, 56, 152, 368), (1, 1, 1, 1), (8, 8, 8, 8))
    assert complexity(arch) == Complexity(flops=199040872, params=2684792, acts=2164056)


@pytest.mark.parametrize("name", sorted(PYCLS_GOLDEN))
def test_regnet_reference_models_match_pycls_published_counts(name):
    (w0, wa, wm, depth, g, se), expected = PYCLS_GOLDEN[name]
    depths, widths = regnet_stages(w0, wa, wm, depth)
    raw = Architecture.raw(
        depths=depths,
        widths=widths,
        bottleneck_ratios=(1.0,) * 4,
        group_widths=(g,) * 4,
        se_ratio=0.25 if se else 0.0,
    )
    cx = complexity(raw.adjusted())
    assert (cx.flops, cx.params, cx.acts) == expected


def test_small_stem_keeps_the_full_resolution_in_the_stem():
    arch = Architecture((1,), (8,), (1,), (8,), stem_width=4)
    small_arch = dataclasses.replace(arch, stem="small")
    big, small = complexity(arch, 32, 1), complexity(small_arch, 32, 1)
    # Every conv sees twice the side length, so 4x the pixels; the head (8 x 1 + 1) stays.
    head = 8 * 1 + 1
    assert small.flops == 4 * (big.flops - head) + head
    assert complexity(small_arch, 16, 1) == big


def test_odd_resolutions_round_up_after_each_stride_as_pycls():
    arch = Architecture((1,), (8,), (1,), (8,), stem_width=8)
    # 33 -> stem 17 -> stage 9: the stage's last 1x1 conv outputs 8 * 9 * 9 activations.
    acts = complexity(arch, 33, num_classes=1).acts
    stem, proj, a, b, c, head = 8 * 17**2, 8 * 81, 8 * 17**2, 8 * 81, 8 * 81, 1
    assert acts == stem + proj + a + b + c + head


def test_batch_rows_equal_single_architecture_counts():
    archs = [s.arch for s in sample(get_space("anynetx_a", se_ratio=0.25), 20, seed=3)]
    flops, params, acts = complexity_batch(
        np.array([a.depths for a in archs]),
        np.array([a.widths for a in archs]),
        np.array([a.bottleneck_ratios for a in archs]),
        np.array([a.group_widths for a in archs]),
        se_ratio=0.25,
        resolution=96,
        num_classes=7,
    )
    singles = [complexity(a, 96, 7) for a in archs]
    assert flops.tolist() == [c.flops for c in singles]
    assert params.tolist() == [c.params for c in singles]
    assert acts.tolist() == [c.acts for c in singles]


def test_batch_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        complexity_batch(np.ones((2, 4)), np.ones((2, 3)), np.ones((2, 4)), np.ones((2, 4)))


def _measured(arch: Architecture, resolution: int, num_classes: int) -> tuple[int, int, int, int]:
    """(params, torch flops / 2, bias elements, conv + linear output elements) of the
    module, shapes only (meta device)."""
    # Built on the CPU (initialising meta tensors would import torch._dynamo), run on meta.
    model = build_model(arch, num_classes).eval().to("meta")
    x = torch.empty(1, 3, resolution, resolution, device="meta")
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    outputs: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel())) for m in layers
    ]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    params = sum(p.numel() for p in model.parameters())
    biases = sum(m.bias.numel() for m in layers if m.bias is not None)
    return params, counter.get_total_flops() // 2, biases, sum(outputs)


def _cases():
    big = [s.arch for s in sample("anynetx_a", 3, seed=11, flops=(360e6, 400e6))]
    small_space = get_space("anynetx_a", max_depth=3, max_width=128, stem="small")
    small = [s.arch for s in sample(small_space, 5, seed=12, resolution=28, num_classes=10)]
    cases = []
    for i, arch in enumerate(big):
        se = dataclasses.replace(arch, se_ratio=0.25) if i % 2 else arch
        cases.append(pytest.param(se, 224, 1000, id=f"224-{se.name}"))
    for i, arch in enumerate(small):
        se = dataclasses.replace(arch, se_ratio=0.25) if i % 2 else arch
        for res in (28, 33):
            cases.append(pytest.param(se, res, 10, id=f"{res}-{se.name}"))
    imagenet = dataclasses.replace(small[0], stem="imagenet", se_ratio=0.5)
    cases.append(pytest.param(imagenet, 64, 3, id=f"64-{imagenet.name}"))
    return cases


@pytest.mark.parametrize(("arch", "resolution", "num_classes"), _cases())
def test_analytic_counts_equal_the_built_module(arch, resolution, num_classes):
    cx = complexity(arch, resolution, num_classes)
    params, torch_macs, biases, outputs = _measured(arch, resolution, num_classes)
    assert cx.params == params
    # torch counts multiply-adds of convs and linears; pycls adds one flop per bias element.
    assert cx.flops == torch_macs + biases
    assert abs(cx.flops - torch_macs) <= 0.005 * torch_macs
    assert cx.acts == outputs
