"""Decoding image and mask files into the batch format (float RGB in [0,1], binary masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from anomaly_freq.errors import AfreqError


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise AfreqError(
            f"cannot read image {path} ({err}); replace or re-download the file"
        ) from err
    return image


def read_rgb(path: Path) -> Image.Image:
    """Open any grey, RGBA, palette or 16-bit image as 8-bit RGB."""
    image = _open(path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.round(array / peak * 255).astype(np.uint8))
    return image.convert("RGB")


def load_image(path: Path, size: int) -> torch.Tensor:
    """3×size×size float32 in [0,1] (antialiased bilinear resize)."""
    image = read_rgb(path)
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255)


def load_mask(path: Path | None, image_path: Path, size: int) -> torch.Tensor:
    """1×size×size float32 in {0,1}; all zeros when ``path`` is None (a normal image)."""
    if path is None:
        return torch.zeros(1, size, size)
    mask = _open(path)
    image_size = _open(image_path).size
    if mask.size != image_size:
        raise AfreqError(
            f"mask {path} is {mask.size[0]}×{mask.size[1]} but its image {image_path} is "
            f"{image_size[0]}×{image_size[1]}; masks must match their image's size"
        )
    binary = Image.fromarray((np.asarray(mask.convert("L")) != 0).astype(np.uint8))
    if binary.size != (size, size):
        binary = binary.resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.asarray(binary).copy()).float()[None]
