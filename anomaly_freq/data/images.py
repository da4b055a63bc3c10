"""Decoding image and mask files into the batch format (float RGB in [0,1], binary masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomaly_freq.errors import AfreqError

READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)
#: ``pil``: decode with PIL, antialiased bilinear resize; ``cv2``: the official codes' loaders,
#: ``cv2.imread`` (8-bit colour) and ``cv2.resize`` with INTER_LINEAR, no antialiasing
RESIZE_MODES = ("pil", "cv2")


def open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except READ_ERRORS as err:
        raise AfreqError(
            f"cannot read image {path} ({err}); replace or re-download the file"
        ) from err
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except READ_ERRORS as err:
        raise AfreqError(f"cannot read image {path} ({err}); replace or re-download it") from err


def read_rgb(path: Path) -> Image.Image:
    """Open any grey, RGBA, palette or 16-bit image as 8-bit RGB."""
    image = open_image(path)
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
    return _opencv().cvtColor(_cv2_resize(_cv2_read(path, grey=False), size),
                              _opencv().COLOR_BGR2RGB)


def _opencv():
    try:
        import cv2
    except ImportError as err:
        raise AfreqError("dataset.resize=cv2 and the code mask rules need OpenCV: pip install "
                         "opencv-python-headless (or the project's cv2 extra)") from err
    return cv2


def _cv2_read(path: Path, grey: bool) -> np.ndarray:
    cv2 = _opencv()
    array = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if array is None:
        raise AfreqError(f"cannot read image {path} with OpenCV; replace or re-download the file")
    return array


def _cv2_resize(array: np.ndarray, size: int) -> np.ndarray:
    if array.shape[:2] == (size, size):
        return array
    return _opencv().resize(array, (size, size), interpolation=_opencv().INTER_LINEAR)


#: how masks are resized and binarised: ``nearest``: binarised ``!= 0`` at full size, then
#: nearest-neighbour resize, one mask for every metric (the framework's); ``fair_code`` and
#: ``dfd_code``: as those codes' loaders, ``cv2.resize`` bilinear on the 8-bit mask, then FAIR's
#: two masks (pixel metrics on the pixels equal to 255, PRO on every non-zero pixel) or DFD's
#: one (``/255 > 0.5``)
MASK_RULES = ("nearest", "fair_code", "dfd_code")


def check_mask_rule(rule: str) -> str:
    if rule not in MASK_RULES:
        raise AfreqError(f"dataset.mask_rule={rule} is unknown; valid: {', '.join(MASK_RULES)}")
    return rule


def binarise(levels: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixel-metric mask, PRO mask), both bool, from a mask's 8-bit grey levels.

    >>> binarise(np.array([0, 1, 128, 255], np.uint8), "fair_code")[0].tolist()
    [False, False, False, True]
    """
    if check_mask_rule(rule) == "fair_code":
        return levels == 255, levels != 0
    mask = levels > 127 if rule == "dfd_code" else levels != 0
    return mask, mask


def decode_mask(path: Path, image_path: Path, size: int, crop: int | None = None,
                rule: str = "nearest") -> np.ndarray:
    """H×W uint8 grey levels at ``size`` (and ``crop``), for `binarise`: under ``nearest``
    0 or 255 (binarised ``!= 0``, then nearest-neighbour resize); under the codes' rules the
    ``cv2.resize`` bilinear levels of the 8-bit mask."""
    mask = open_image(path)
    expected = image_size(image_path)
    if mask.size != expected:
        raise AfreqError(
            f"mask {path} is {mask.size[0]}×{mask.size[1]} but its image {image_path} is "
            f"{expected[0]}×{expected[1]}; masks must match their image's size"
        )
    if check_mask_rule(rule) == "nearest":
        binary = Image.fromarray(((np.asarray(mask.convert("L")) != 0) * 255).astype(np.uint8))
        return np.asarray(_fit(binary, size, crop, Image.NEAREST)).copy()
    levels = _cv2_resize(_cv2_read(path, grey=True), size)
    if crop and crop < size:
        left = (size - crop) // 2
        levels = levels[left:left + crop, left:left + crop]
    return np.ascontiguousarray(levels)
