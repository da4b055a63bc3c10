"""Otsu foreground masks, so object categories only get anomalies on the object."""

from __future__ import annotations

import torch

from anomaly_freq.freq.filters import to_grey


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


def otsu_foreground(image: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """1×H×W mask of pixels brighter than Otsu's threshold (darker with ``invert``).

    DFD's table (dfd.md §3): hazelnut, metal_nut, pill and toothbrush keep the brighter pixels;
    bottle, capsule, screw and transistor the darker ones (``invert=True``); others use no mask.

    >>> img = torch.zeros(3, 8, 8); img[:, 2:6, 2:6] = 1
    >>> int(otsu_foreground(img).sum())
    16
    """
    grey = to_grey(image[None])[0]
    mask = grey > otsu_threshold(grey)
    return (~mask if invert else mask).float()
