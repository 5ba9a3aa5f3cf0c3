"""Batched device augmentations: crop boxes, grid crops and flips, pad-and-crop gathers."""

from __future__ import annotations

import torch

from loaders import augment as aug


def test_rrc_boxes_lie_inside_the_image_with_torchvisions_area_range():
    boxes = aug.rrc_boxes(2000, 40, 30, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 40).all() and (left + w <= 30).all()
    area = h * w / (40 * 30)
    assert area.min() >= 0.08 * 0.9 and area.max() <= 1.0
    assert ((w / h) >= 0.75 * 0.9).all() and ((w / h) <= 4 / 3 * 1.1).all()


def test_a_whole_image_box_reproduces_the_image_and_a_flip_mirrors_it():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    box = torch.tensor([[0, 0, 6, 6], [0, 0, 6, 6]], dtype=torch.float64)
    out = aug.crop_resize(images, box, 6, flip=torch.tensor([False, True]))
    assert torch.allclose(out[0], images[0], atol=1e-4)
    assert torch.allclose(out[1], images[1].flip(-1), atol=1e-4)


def test_a_box_is_cropped_then_resized():
    images = torch.arange(8 * 8, dtype=torch.float32).reshape(1, 1, 8, 8)
    out = aug.crop_resize(images, torch.tensor([[2.0, 4.0, 4.0, 4.0]]), 4)
    assert torch.allclose(out[0, 0], images[0, 0, 2:6, 4:8], atol=1e-4)


def test_pad_crop_takes_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 255, (16, 3, 8, 8), dtype=torch.uint8)
    out = aug.pad_crop_flip(images, 2, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for n in range(16):
        windows = [padded[n, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[n], w) or torch.equal(out[n], w.flip(-1)) for w in windows)


def test_pad_crop_flips_about_half_the_batch():
    images = torch.arange(8, dtype=torch.uint8).repeat(400, 1, 8, 1)  # rows 0..7 left to right
    out = aug.pad_crop_flip(images, 0, torch.Generator().manual_seed(2))
    flipped = (out[:, 0, 0, 0] == 7).sum().item()
    assert 150 < flipped < 250
    assert ((out[:, 0, 0, 0] == 0) | (out[:, 0, 0, 0] == 7)).all()


def test_the_same_seed_and_epoch_give_the_same_generator():
    a, b = aug.epoch_generator(5, 1), aug.epoch_generator(5, 1)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert aug.mix_seed(5, 1) != aug.mix_seed(5, 2)


def test_auto_augment_is_rrc_above_64_px_else_pad_crop():
    assert aug.resolve_augment("auto", 224) == "rrc"
    assert aug.resolve_augment("auto", 32) == "pad_crop"


def test_rrc_runs_on_images_on_another_device_than_its_generator():
    # The generator (and so the boxes and flips) lives on the CPU while a study's images
    # live on the GPU; the meta device stands in for it here and fails the same way when
    # one of the tensors combined is moved and the other is not.
    gen = torch.Generator().manual_seed(0)
    images = torch.empty(4, 3, 40, 40, device="meta")
    out = aug.random_resized_crop_flip(images, 32, gen)
    assert out.shape == (4, 3, 32, 32) and out.device.type == "meta"
