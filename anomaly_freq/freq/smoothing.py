"""Gaussian smoothing with scipy.ndimage's truncation rule, in either of its mirror borders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

from anomaly_freq.errors import AfreqError

BORDERS = ("reflect", "mirror")


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian weights: radius int(truncate·σ + 0.5), sum 1, float64.

    >>> gaussian_kernel(1.0, truncate=1.0)
    tensor([0.2741, 0.4519, 0.2741], dtype=torch.float64)
    """
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _symmetric_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of scipy's 'reflect' border (d c b a | a b c d | d c b a), any radius."""
    idx = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def gaussian_smooth(x: torch.Tensor, sigma: float, truncate: float = 4.0,
                    border: str = "reflect") -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(x, sigma, mode=border, truncate=truncate)`` on the last
    two axes of a B×C×H×W tensor; identity for sigma <= 0.

    ``border="reflect"`` repeats the edge pixel (d c b a | a b c d), any radius, as DFD's code
    smooths; ``"mirror"`` does not (d c b | a b c d) and needs a radius below H and W.

    >>> x = torch.zeros(1, 1, 5, 5)
    >>> x[0, 0, 2, 2] = 1
    >>> y = gaussian_smooth(x, 1.0)
    >>> round(float(y.sum()), 6), y[0, 0, 2, 2] == y.max()
    (1.0, tensor(True))
    """
    if border not in BORDERS:
        raise AfreqError(f"smoothing border '{border}' is unknown; valid: {', '.join(BORDERS)}")
    if sigma <= 0:
        return x
    if border == "mirror":  # kornia's 'reflect' is scipy's 'mirror'
        k = 2 * int(truncate * sigma + 0.5) + 1
        return gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")
    # kornia has no border that repeats the edge pixel, so scipy's 'reflect' is done here
    k = gaussian_kernel(sigma, truncate).to(x)
    r = (k.numel() - 1) // 2
    b, c, h, w = x.shape
    flat = x.reshape(b * c, 1, h, w)
    rows = flat.index_select(2, _symmetric_index(h, r, x.device))
    flat = F.conv2d(rows, k.view(1, 1, -1, 1))
    cols = flat.index_select(3, _symmetric_index(w, r, x.device))
    return F.conv2d(cols, k.view(1, 1, 1, -1)).reshape(b, c, h, w)
