"""Decoding image and mask files into the batch format (float RGB in [0,1], binary masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomaly_freq.errors import AfreqError

_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)
#: ``pil``: decode with PIL, antialiased bilinear resize; ``cv2``: the official codes' loaders,
#: ``cv2.imread`` (8-bit colour) and ``cv2.resize`` with INTER_LINEAR, no antialiasing
RESIZE_MODES = ("pil", "cv2")


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


def check_resize(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise AfreqError(f"dataset.resize={mode} is unknown; valid: {', '.join(RESIZE_MODES)}")
    return mode


def decode_image(path: Path, size: int, crop: int | None = None,
                 resize: str = "pil") -> np.ndarray:
    """H×W×3 uint8 RGB, resized to ``size`` (see `RESIZE_MODES`) and centre-cropped to
    ``crop``."""
    if check_resize(resize) == "cv2":
        image = _cv2_rgb(path, size)
        if crop and crop < size:
            left = (size - crop) // 2
            image = image[left:left + crop, left:left + crop]
        return np.ascontiguousarray(image)
    return np.asarray(_fit(read_rgb(path), size, crop, Image.BILINEAR)).copy()


def _cv2_rgb(path: Path, size: int) -> np.ndarray:
    """As the official loaders read: ``cv2.imread`` (grey, 16-bit and alpha images come back
    as 8-bit BGR), ``cv2.resize`` bilinear, then BGR → RGB (the batch format's order)."""
    try:
        import cv2
    except ImportError as err:
        raise AfreqError("dataset.resize=cv2 needs OpenCV: pip install opencv-python-headless "
                         "(or the project's cv2 extra)") from err
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise AfreqError(f"cannot read image {path} with OpenCV; replace or re-download the file")
    if bgr.shape[:2] != (size, size):
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
