"""The AnyNet network of an architecture, as pycls builds it (stem, stages of X blocks,
head), with pycls's weight initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn

from anynet.arch import Architecture


def build_model(
    arch: Architecture,
    num_classes: int,
    in_channels: int = 3,
    *,
    zero_init_final_gamma: bool = False,
) -> nn.Module:
    """The AnyNet for ``arch`` mapping (N, in_channels, H, W) images to (N, num_classes)
    logits. ``zero_init_final_gamma`` is pycls's BN.ZERO_INIT_FINAL_GAMMA (off by default)."""
    if not isinstance(arch, Architecture):
        raise ValueError(f"arch must be an Architecture, got {type(arch).__name__}")
    if not arch.compatible:
        raise ValueError(
            f"architecture {arch.name} breaks the width/group compatibility rule; "
            "build arch.adjusted() instead"
        )
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    model = AnyNet(arch, num_classes, in_channels)
    model.apply(lambda m: _init_weights(m, zero_init_final_gamma))
    return model


class AnyNet(nn.Module):
    """Stem, one stage per entry of the architecture's tuples, head."""

    def __init__(self, arch: Architecture, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = Stem(in_channels, arch.stem_width, stride=2 if arch.stem == "imagenet" else 1)
        w_in = arch.stem_width
        stages = zip(
            arch.depths, arch.widths, arch.bottleneck_ratios, arch.group_widths, strict=True
        )
        for i, (d, w, b, g) in enumerate(stages):
            blocks = [
                XBlock(w_in if j == 0 else w, w, 2 if j == 0 else 1, b, g, arch.se_ratio)
                for j in range(d)
            ]
            self.add_module(f"s{i + 1}", nn.Sequential(*blocks))
            w_in = w
        self.head = Head(w_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


class Stem(nn.Sequential):
    """3x3 conv, BN, ReLU."""

    def __init__(self, w_in: int, w_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(w_in, w_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(w_out)
        self.af = nn.ReLU(inplace=True)


class SE(nn.Module):
    """Squeeze-and-excitation: global average pool, 1x1 conv, ReLU, 1x1 conv, sigmoid."""

    def __init__(self, w_in: int, w_se: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.f_ex = nn.Sequential(
            nn.Conv2d(w_in, w_se, 1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(w_se, w_in, 1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.f_ex(self.avg_pool(x))


class XBlock(nn.Module):
    """Residual bottleneck block with group conv: x + F(x), projected when shape changes."""

    def __init__(
        self, w_in: int, w_out: int, stride: int, b: float, g: int, se_ratio: float
    ) -> None:
        super().__init__()
        w_b = int(round(w_out / b))
        self.proj_block = w_in != w_out or stride != 1
        if self.proj_block:
            self.proj = nn.Conv2d(w_in, w_out, 1, stride=stride, padding=0, bias=False)
            self.bn = nn.BatchNorm2d(w_out)
        f = nn.Sequential()
        f.a = nn.Conv2d(w_in, w_b, 1, stride=1, padding=0, bias=False)
        f.a_bn = nn.BatchNorm2d(w_b)
        f.a_af = nn.ReLU(inplace=True)
        f.b = nn.Conv2d(w_b, w_b, 3, stride=stride, padding=1, groups=w_b // g, bias=False)
        f.b_bn = nn.BatchNorm2d(w_b)
        f.b_af = nn.ReLU(inplace=True)
        if se_ratio:
            # pycls sizes the squeeze from the block's input width, not the bottleneck's.
            f.se = SE(w_b, int(round(w_in * se_ratio)))
        f.c = nn.Conv2d(w_b, w_out, 1, stride=1, padding=0, bias=False)
        f.c_bn = nn.BatchNorm2d(w_out)
        # A plain attribute, not a parameter or buffer: _init_weights reads it.
        object.__setattr__(f.c_bn, "final_bn", True)
        self.f = f
        self.af = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.bn(self.proj(x)) if self.proj_block else x
        return self.af(shortcut + self.f(x))


class Head(nn.Module):
    """Global average pool, linear layer with bias."""

    def __init__(self, w_in: int, num_classes: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w_in, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flatten, not view: the pooled tensor of a channels_last input is not contiguous.
        return self.fc(torch.flatten(self.avg_pool(x), 1))


def _init_weights(m: nn.Module, zero_init_final_gamma: bool) -> None:
    """pycls's ResNet-style init: conv normal with std sqrt(2 / fan_out), BN 1 and 0,
    linear normal with std 0.01 and zero bias."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
    elif isinstance(m, nn.BatchNorm2d):
        zero = zero_init_final_gamma and getattr(m, "final_bn", False)
        nn.init.constant_(m.weight, 0.0 if zero else 1.0)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, mean=0.0, std=0.01)
        nn.init.zeros_(m.bias)
