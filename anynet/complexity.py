"""Analytic flops (multiply-adds), parameters and activations of AnyNet architectures,
counted exactly as pycls counts them, for one architecture or a whole batch at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anynet.arch import Architecture


@dataclass(frozen=True)
class Complexity:
    """flops: multiply-adds of convs and linear layers plus their bias adds; params: weights,
    biases and 2 per BN channel; acts: output sizes of conv and linear layers."""

    flops: int
    params: int
    acts: int


def complexity(
    arch: Architecture, resolution: int = 224, num_classes: int = 1000, in_channels: int = 3
) -> Complexity:
    """Complexity of ``arch`` on ``resolution`` x ``resolution`` images with ``num_classes``."""
    flops, params, acts = complexity_batch(
        np.array([arch.depths]),
        np.array([arch.widths]),
        np.array([arch.bottleneck_ratios]),
        np.array([arch.group_widths]),
        stem=arch.stem,
        stem_width=arch.stem_width,
        se_ratio=arch.se_ratio,
        resolution=resolution,
        num_classes=num_classes,
        in_channels=in_channels,
    )
    return Complexity(int(flops[0]), int(params[0]), int(acts[0]))


def complexity_batch(
    depths: np.ndarray,
    widths: np.ndarray,
    bottleneck_ratios: np.ndarray,
    group_widths: np.ndarray,
    *,
    stem: str = "imagenet",
    stem_width: int = 32,
    se_ratio: float = 0.0,
    resolution: int = 224,
    num_classes: int = 1000,
    in_channels: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flops, params, acts) as int64 arrays of length B for B architectures given as
    (B, stages) arrays that share stem, stem width and SE ratio.

    The blocks after the first in a stage are identical, so a stage costs its first block
    plus (depth - 1) times one repeated block: a few array operations per stage, whatever
    the depth, which is what makes rejection sampling over many draws cheap.
    """
    d = np.asarray(depths, dtype=np.int64)
    w = np.asarray(widths, dtype=np.int64)
    b = np.asarray(bottleneck_ratios, dtype=np.float64)
    g = np.asarray(group_widths, dtype=np.int64)
    if not d.shape == w.shape == b.shape == g.shape or d.ndim != 2:
        raise ValueError(
            "depths, widths, bottleneck_ratios and group_widths must be (B, stages) arrays "
            f"of one shape, got {d.shape}, {w.shape}, {b.shape}, {g.shape}"
        )
    if stem not in ("imagenet", "small"):
        raise ValueError(f"unknown stem {stem!r}; valid stems are ['imagenet', 'small']")
    if resolution < 1 or num_classes < 1 or in_channels < 1:
        raise ValueError(
            f"resolution, num_classes and in_channels must be positive, got "
            f"{resolution}, {num_classes}, {in_channels}"
        )
    # Bottleneck width and groups as pycls's BottleneckTransform computes them.
    wb = np.round(w / b).astype(np.int64)
    groups = wb // g

    # Stem: 3x3 conv (stride 2 for ImageNet, 1 for small images), BN.
    h = (resolution - 1) // 2 + 1 if stem == "imagenet" else resolution
    flops = np.full(d.shape[0], 9 * in_channels * stem_width * h * h, dtype=np.int64)
    params = np.full(d.shape[0], 9 * in_channels * stem_width + 2 * stem_width, dtype=np.int64)
    acts = np.full(d.shape[0], stem_width * h * h, dtype=np.int64)

    w_in = np.full(d.shape[0], stem_width, dtype=np.int64)
    for s in range(d.shape[1]):
        ws, wbs, gs, ds = w[:, s], wb[:, s], groups[:, s], d[:, s]
        h_in, h = h, (h - 1) // 2 + 1
        hw_in, hw = h_in * h_in, h * h
        # First block: stride 2, input width w_in, so it always has the projection shortcut
        # (1x1 conv stride 2 + BN); its 1x1 conv "a" runs before the stride.
        f1 = w_in * ws * hw + w_in * wbs * hw_in + 9 * wbs * wbs * hw // gs + wbs * ws * hw
        p1 = w_in * ws + 2 * ws + w_in * wbs + 9 * wbs * wbs // gs + wbs * ws + 4 * wbs + 2 * ws
        a1 = ws * hw + wbs * hw_in + wbs * hw + ws * hw
        # Repeated block: stride 1, input width = stage width, identity shortcut.
        fr = ws * wbs * hw + 9 * wbs * wbs * hw // gs + wbs * ws * hw
        pr = ws * wbs + 9 * wbs * wbs // gs + wbs * ws + 4 * wbs + 2 * ws
        ar = wbs * hw + wbs * hw + ws * hw
        if se_ratio:
            # SE squeezes the bottleneck to round(block input width * ratio) channels at
            # 1x1 spatial size: two 1x1 convs with bias.
            for w_blk, is_first in ((w_in, True), (ws, False)):
                se = np.round(w_blk * se_ratio).astype(np.int64)
                fs = wbs * se + se + se * wbs + wbs
                as_ = se + wbs
                if is_first:
                    f1, p1, a1 = f1 + fs, p1 + fs, a1 + as_
                else:
                    fr, pr, ar = fr + fs, pr + fs, ar + as_
        reps = ds - 1
        flops += f1 + reps * fr
        params += p1 + reps * pr
        acts += a1 + reps * ar
        w_in = ws
    # Head: global average pool (uncounted, as in pycls) then a linear layer with bias.
    flops += w_in * num_classes + num_classes
    params += w_in * num_classes + num_classes
    acts += num_classes
    return flops, params, acts
