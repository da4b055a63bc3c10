"""Otsu foreground masks, so object categories only get anomalies on the object."""

from __future__ import annotations

import torch
from kornia.color import rgb_to_grayscale


def otsu_threshold(grey: torch.Tensor) -> float:
    """Otsu's threshold of a grey image in [0, 1] on its 8-bit levels, as
    cv2.threshold(THRESH_OTSU) picks it (level / 255; pixels above it are the upper class).

    >>> round(otsu_threshold(torch.tensor([0.1, 0.1, 0.9, 0.9])) * 255)
    26
    """
    levels = (grey.clamp(0, 1) * 255).round().long().flatten()
    hist = torch.bincount(levels, minlength=256).double()
    prob = hist / hist.sum()
    omega = torch.cumsum(prob, 0)
    mu = torch.cumsum(prob * torch.arange(256, dtype=torch.float64), 0)
    between = (mu[-1] * omega - mu) ** 2 / (omega * (1 - omega)).clamp_min(1e-12)
    return float(torch.argmax(between)) / 255


def grey_levels(image: torch.Tensor) -> torch.Tensor:
    """H×W 8-bit grey levels of a 3×H×W [0,1] RGB image as ``cv2.cvtColor(BGR2GRAY)`` computes
    them from the uint8 image: (9798·R + 19235·G + 3735·B + 2¹⁴) >> 15, OpenCV's fixed-point
    0.299 R + 0.587 G + 0.114 B, which kornia's uint8 conversion computes.

    >>> int(grey_levels(torch.ones(3, 1, 1))[0, 0])
    255
    """
    return rgb_to_grayscale((image.clamp(0, 1) * 255).round().to(torch.uint8))[0].long()


def otsu_split(levels: torch.Tensor, among: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask of the grey ``levels`` above Otsu's threshold, the threshold taken over
    the pixels ``among`` selects (all by default), as ``cv2.threshold(THRESH_OTSU)`` splits."""
    picked = levels if among is None else levels[among]
    return levels > round(otsu_threshold(picked.double() / 255) * 255)


def otsu_foreground(image: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """1×H×W mask of pixels brighter than Otsu's threshold (darker with ``invert``), on the
    rounded 8-bit grey image as DFD's code thresholds it.

    DFD's table (dfd.md §3): hazelnut, metal_nut, pill and toothbrush keep the brighter pixels;
    bottle, capsule, screw and transistor the darker ones (``invert=True``); others use no mask.

    >>> img = torch.zeros(3, 8, 8); img[:, 2:6, 2:6] = 1
    >>> int(otsu_foreground(img).sum())
    16
    """
    mask = otsu_split(grey_levels(image))[None]
    return (~mask if invert else mask).float()
