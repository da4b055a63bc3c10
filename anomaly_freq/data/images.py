"""Decoding image and mask files into the batch format (float RGB in [0,1], binary masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomaly_freq.errors import AfreqError

_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except _READ_ERRORS as err:
        raise AfreqError(
            f"cannot read image {path} ({err}); replace or re-download the file"
        ) from err
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except _READ_ERRORS as err:
        raise AfreqError(f"cannot read image {path} ({err}); replace or re-download it") from err


def read_rgb(path: Path) -> Image.Image:
    """Open any grey, RGBA, palette or 16-bit image as 8-bit RGB."""
    image = _open(path)
    if image.mode == "F":
        raise AfreqError(f"{path} holds floating-point pixels, whose range is unknown; save it "
                         "as an 8- or 16-bit image")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.round(array / peak * 255).astype(np.uint8))
    return image.convert("RGB")


def _fit(image: Image.Image, size: int, crop: int | None, resample: int) -> Image.Image:
    if image.size != (size, size):
        image = image.resize((size, size), resample)
    if crop and crop < size:
        left = (size - crop) // 2
        image = image.crop((left, left, left + crop, left + crop))
    return image


def decode_image(path: Path, size: int, crop: int | None = None) -> np.ndarray:
    """H×W×3 uint8, resized (antialiased bilinear) to ``size`` and centre-cropped to ``crop``."""
    return np.asarray(_fit(read_rgb(path), size, crop, Image.BILINEAR)).copy()


def decode_mask(path: Path, image_path: Path, size: int, crop: int | None = None) -> np.ndarray:
    """H×W uint8 in {0,1} (binarised ``!= 0``, nearest-neighbour resize)."""
    mask = _open(path)
    expected = image_size(image_path)
    if mask.size != expected:
        raise AfreqError(
            f"mask {path} is {mask.size[0]}×{mask.size[1]} but its image {image_path} is "
            f"{expected[0]}×{expected[1]}; masks must match their image's size"
        )
    binary = Image.fromarray((np.asarray(mask.convert("L")) != 0).astype(np.uint8))
    return np.asarray(_fit(binary, size, crop, Image.NEAREST)).copy()
