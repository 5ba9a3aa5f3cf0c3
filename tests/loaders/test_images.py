"""Single images: decoding to the asked channels, shrinking to a longest side, squaring."""

from __future__ import annotations

import numpy as np
from PIL import Image

from loaders.images import fit_max_side, read_image, square


def test_a_grayscale_file_reads_as_one_or_three_equal_channels(tmp_path, elpv_images):
    Image.fromarray(elpv_images[0]).save(tmp_path / "a.png")
    one, three = read_image(str(tmp_path / "a.png"), 1), read_image(str(tmp_path / "a.png"), 3)
    assert one.shape == (300, 300, 1) and three.shape == (300, 300, 3)
    assert np.array_equal(one[..., 0], elpv_images[0])
    assert np.array_equal(three[..., 1], elpv_images[0])


def test_a_16_bit_png_keeps_its_high_byte(tmp_path, elpv_images):
    wide = elpv_images[0].astype(np.uint16) * 256 + 255
    Image.fromarray(wide).save(tmp_path / "w.png")
    assert np.array_equal(read_image(str(tmp_path / "w.png"), 1)[..., 0], elpv_images[0])


def test_fit_max_side_shrinks_the_longest_side_and_keeps_the_aspect(elpv_images):
    image = elpv_images[0][:, :150, None]  # 300 high, 150 wide
    assert fit_max_side(image, 100).shape == (100, 50, 1)
    assert fit_max_side(image, 400) is image


def test_square_takes_the_centre_of_the_resized_image(elpv_images):
    image = np.ascontiguousarray(elpv_images[0][:, :150, None])
    out = square(image, 150)
    assert out.shape == (150, 150, 1)
    assert np.array_equal(out, image[75:225])
