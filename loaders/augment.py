"""Batched augmentation and normalisation on the training device (torch): random-resized crop
and flip by per-sample affine grids, pad-and-crop with flip by index gathers, evaluation crops.
Random draws come from one CPU generator per (seed, epoch), so CPU and CUDA draw the same."""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

# The names live with the registry, which needs no torch; loaders.augment.AUGMENTS stays valid.
from loaders.registry import AUGMENTS as AUGMENTS

# The ImageNet recipe evaluates a centre crop of 224/256 of the shorter side.
EVAL_CROP_RATIO = 224 / 256
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)


def resolve_augment(augment: str, resolution: int) -> str:
    """ "auto": random-resized crop + flip above 64 px (ImageNet recipe), else pad-and-crop +
    flip (CIFAR recipe, padding resolution/8)."""
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; valid: {list(AUGMENTS)}")
    if augment == "auto":
        return "rrc" if resolution > 64 else "pad_crop"
    return augment


def eval_crop_ratio(augment: str) -> float:
    return EVAL_CROP_RATIO if augment == "rrc" else 1.0


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers, stable across machines and Python runs."""
    digest = hashlib.sha256(",".join(str(int(v)) for v in values).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(seed, epoch))


def rrc_boxes(
    n: int,
    height: int,
    width: int,
    gen: torch.Generator,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
    tries: int = 10,
) -> torch.Tensor:
    """(n, 4) crop boxes (top, left, h, w) drawn as torchvision's RandomResizedCrop does:
    the first of `tries` area/aspect draws that fits, else the whole image clamped in aspect."""
    u = torch.rand(n, tries, 2, generator=gen, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int64).argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    in_ratio = width / height
    fw = (
        width
        if ratio[0] <= in_ratio <= ratio[1]
        else (width if in_ratio < ratio[0] else round(height * ratio[1]))
    )
    fh = (
        height
        if ratio[0] <= in_ratio <= ratio[1]
        else (round(width / ratio[0]) if in_ratio < ratio[0] else height)
    )
    ok = fits.any(dim=1)
    w = torch.where(ok, w, torch.full_like(w, fw))
    h = torch.where(ok, h, torch.full_like(h, fh))
    pos = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    top = torch.where(ok, torch.floor(pos[:, 0] * (height - h + 1)), torch.floor((height - h) / 2))
    left = torch.where(ok, torch.floor(pos[:, 1] * (width - w + 1)), torch.floor((width - w) / 2))
    return torch.stack([top, left, h, w], dim=1)


def crop_resize(
    images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Float N,C,H,W images: each box (top, left, h, w) resized bilinearly to size x size,
    mirrored where `flip`, in one grid_sample call."""
    n, _, height, width = images.shape
    top, left, h, w = boxes.to(torch.float64).unbind(1)
    # Box edges in grid_sample's normalised coordinates (align_corners=False: -1 and 1 are
    # the outer edges of the border pixels).
    sx, sy = w / width, h / height
    cx = (2 * left + w) / width - 1
    cy = (2 * top + h) / height - 1
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop_flip(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Float N,C,H,W -> N,C,size,size: torchvision-style random-resized crop and flip."""
    n, _, height, width = images.shape
    boxes = rrc_boxes(n, height, width, gen)
    flip = torch.rand(n, generator=gen) < 0.5  # on the generator's device, like the boxes
    return crop_resize(images, boxes, size, flip)


def pad_crop_flip(
    images: torch.Tensor, pad: int, gen: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """Any-dtype N,C,H,W: zero-pad by `pad`, take a random H x W window, mirror half the
    batch (when `flip`); exact pixel copies by one gather."""
    n, c, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    mirror = (torch.rand(n, generator=gen) < 0.5) & flip
    rows = offsets[:, :1] + torch.arange(height)
    cols = offsets[:, 1:] + torch.arange(width)
    cols = torch.where(mirror[:, None], cols.flip(1), cols)
    flat = rows[:, :, None] * (width + 2 * pad) + cols[:, None, :]
    flat = flat.view(n, 1, height * width).to(images.device).expand(n, c, height * width)
    return padded.reshape(n, c, -1).gather(2, flat).view(n, c, height, width)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def center_crop_resize(images: torch.Tensor, size: int, ratio: float) -> torch.Tensor:
    """Float N,C,H,W: the centre square of ratio x the shorter side, resized to size."""
    height, width = images.shape[-2:]
    side = int(ratio * min(height, width))
    top, left = (height - side) // 2, (width - side) // 2
    return resize_batch(images[..., top : top + side, left : left + side], size)


def normalize(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool
) -> torch.Tensor:
    """N,C,H,W (C 1 or 3, 0..255 values) -> float32 N,3,H,W standardised per channel; one
    channel is replicated by broadcasting against the 3-channel mean and std."""
    out = (images.to(torch.float32) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    if out.shape[1] != 3:
        out = out.expand(-1, 3, -1, -1)
    return out.contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )


def to_rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 N,C,H,W with one channel replicated to 3."""
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images
