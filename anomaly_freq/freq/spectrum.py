"""Radially averaged power spectrum: energy against distance from the spectrum's centre."""

from __future__ import annotations

import torch


def radial_energy_spectrum(x: torch.Tensor, bins: int | None = None) -> torch.Tensor:
    """Mean |F|² of the centred spectrum per integer radius, averaged over channels: B×R.

    Radius r collects frequencies with r ≤ D < r + 1; ``bins`` defaults to min(H, W) // 2.

    >>> radial_energy_spectrum(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 16])
    """
    h, w = x.shape[-2:]
    bins = bins or min(h, w) // 2
    power = torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1)).abs() ** 2
    power = power.mean(1).flatten(1)  # B×(H·W)
    y = torch.arange(h, device=x.device).view(h, 1) - h // 2
    xx = torch.arange(w, device=x.device).view(1, w) - w // 2
    radius = torch.sqrt((y**2 + xx**2).float()).floor().long().flatten()
    inside = radius < bins
    sums = power.new_zeros(power.shape[0], bins).index_add_(1, radius[inside], power[:, inside])
    counts = torch.bincount(radius[inside], minlength=bins).clamp_min(1).to(power)
    return sums / counts
