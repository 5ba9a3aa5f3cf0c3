"""Decoding, checking and resizing single images (PIL to decode, OpenCV to resize)."""

from __future__ import annotations

import os

import numpy as np

from loaders.registry import DatasetError

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L"})


def read_image(path: str, channels: int) -> np.ndarray:
    """Decode a whole image file to H,W,C uint8 (C = channels); a bad file raises DatasetError."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # decodes everything, so a truncated file fails here
            if im.mode.startswith("I;16"):
                # 16-bit grayscale: keep the high byte rather than clip to 255.
                arr = (np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8)
                arr = arr if channels == 1 else np.repeat(arr[..., None], 3, axis=2)
            else:
                arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot read the image ({e})") from e
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DatasetError(f"{path}: the image is empty ({arr.shape})")
    return np.ascontiguousarray(arr)


def image_header(path: str) -> tuple[int, int, str]:
    """(width, height, mode) from the file's header alone; a bad file raises DatasetError."""
    from PIL import Image

    try:
        if os.path.getsize(path) == 0:
            raise DatasetError(f"{path}: the file is empty")
        with Image.open(path) as im:
            return im.size[0], im.size[1], im.mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from e


_header_files: tuple[str, ...] = ()  # inherited by forked workers of check_headers


def _header_chunk(bounds: tuple[int, int]) -> tuple[int, int, list[str]]:
    width, height, errors = 0, 0, []
    for f in _header_files[bounds[0] : bounds[1]]:
        try:
            w, h, _ = image_header(f)
            width, height = max(width, w), max(height, h)
        except DatasetError as e:
            errors.append(str(e))
    return width, height, errors


def check_headers(
    files: tuple[str, ...], num_workers: int = 1, progress: bool = False
) -> tuple[int, int, list[str]]:
    """Every file's header read (no decoding), in parallel: (largest width, largest height,
    the errors of missing, empty and non-image files)."""
    import multiprocessing as mp

    from tqdm import tqdm

    global _header_files
    _header_files = files
    chunk = 256
    bounds = [(s, min(s + chunk, len(files))) for s in range(0, len(files), chunk)]
    pool = mp.get_context("fork").Pool(num_workers) if num_workers > 1 and len(bounds) > 1 else None
    width, height, errors = 0, 0, []
    try:
        results = pool.imap(_header_chunk, bounds) if pool else map(_header_chunk, bounds)
        with tqdm(
            total=len(files), desc="checking files", disable=not progress, unit="file"
        ) as bar:
            for (start, stop), (w, h, errs) in zip(bounds, results, strict=True):
                width, height = max(width, w), max(height, h)
                errors.extend(errs)
                bar.update(stop - start)
    finally:
        _header_files = ()
        if pool is not None:
            pool.terminate()
    return width, height, errors


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """H,W,C uint8 resized (area averaging when shrinking, bilinear when enlarging)."""
    import cv2

    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    out = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    return out.reshape(height, width, image.shape[2])


def fit_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink so the longest side is at most max_side (aspect kept, as ffcv does)."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    ratio = max_side / max(h, w)
    return resize(image, max(1, int(w * ratio)), max(1, int(h * ratio)))


def square(image: np.ndarray, side: int) -> np.ndarray:
    """Shorter side resized to `side`, then the centre side x side square."""
    h, w = image.shape[:2]
    scale = side / min(h, w)
    nh, nw = max(side, round(h * scale)), max(side, round(w * scale))
    image = resize(image, nw, nh)
    top, left = (nh - side) // 2, (nw - side) // 2
    return np.ascontiguousarray(image[top : top + side, left : left + side])
