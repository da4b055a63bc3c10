"""DFD's map post-processing (spec §10): scipy-exact Gaussian smoothing and the fusions.

The official code fuses the two discriminators' maps with test-set statistics. The method
itself never does that: by default it standardises each map with statistics of clean training
images (`FusionStats`), and returns the raw per-discriminator maps as ``map_parts`` so that the
evaluator's named ``minmax`` option can reproduce the paper's test-set fusion.
`code_exact_normalise` is the closed form of the code's (broadcasting-slip) pixel
normalisation, for whoever applies it to a set of maps on purpose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FUSIONS = ("standardise", "closed_form", "raw")


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian weights: radius int(truncate·σ + 0.5), sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _symmetric_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of scipy's 'reflect' border (d c b a | a b c d | d c b a), any radius."""
    idx = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def gaussian_smooth(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(x, sigma, mode='reflect', truncate=truncate)`` on the
    last two axes of a B×C×H×W tensor (separable; identity for sigma <= 0)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel(sigma, truncate).to(x)
    r = (k.numel() - 1) // 2
    b, c, h, w = x.shape
    flat = x.reshape(b * c, 1, h, w)
    rows = flat.index_select(2, _symmetric_index(h, r, x.device))
    flat = F.conv2d(rows, k.view(1, 1, -1, 1))
    cols = flat.index_select(3, _symmetric_index(w, r, x.device))
    return F.conv2d(cols, k.view(1, 1, 1, -1)).reshape(b, c, h, w)


def closed_form_constants(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, c) of the code's pixel normalisation for one discriminator's maps N×H×W.

    The code's broadcasting slip turns every map P_j into a·P_j − c with
    a = mean_i 1/r_i and c = mean_i min_i/r_i, r_i = max P_i − min P_i (spec §10).
    """
    flat = maps.reshape(maps.shape[0], -1).double()
    low, high = flat.amin(1), flat.amax(1)
    r = (high - low).clamp_min(1e-12)
    return (1 / r).mean(), (low / r).mean()


def code_exact_normalise(parts: torch.Tensor) -> torch.Tensor:
    """The official code's fused pixel maps for a whole set, K×N×H×W parts → N×H×W.

    Each part (discriminator) j becomes a_j·P − c_j with `closed_form_constants` over the set,
    and the K results are averaged. Transductive when the set is the test set.
    """
    out = torch.zeros(parts.shape[1:], dtype=torch.float64)
    for part in parts:
        a, c = closed_form_constants(part)
        out += a * part.double() - c
    return (out / parts.shape[0]).to(parts.dtype)


def naive_code_normalise(part: torch.Tensor) -> torch.Tensor:
    """The slip as the code writes it (N×N×H×W intermediate), for tests on tiny inputs only."""
    flat = part.reshape(part.shape[0], -1)
    low = flat.amin(1)[:, None, None]
    high = flat.amax(1)[:, None, None]
    # entry [i, j] = (P_j − min P_i) / r_i, then the mean over i
    scaled = (part[None] - low[:, None]) / (high - low)[:, None]
    return scaled.mean(0)
