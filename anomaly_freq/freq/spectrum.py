"""Radially averaged power spectrum: energy against distance from the spectrum's centre."""

from __future__ import annotations

import torch


def radial_energy_spectrum(x: torch.Tensor, bins: int | None = None) -> torch.Tensor:
    """Mean |F|² of the centred spectrum per integer radius, averaged over channels: B×R.

    Radius r collects frequencies with r ≤ D < r + 1, D measured from (H//2, W//2) as in
    ``fft_filter``; ``bins`` defaults to min(H, W) // 2, the highest frequency on both axes.

    >>> radial_energy_spectrum(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 16])
    """
    h, w = x.shape[-2:]
    bins = bins or min(h, w) // 2
    real = x if x.is_floating_point() else x.float()
    spectrum = torch.fft.fft2(real)
    power = (spectrum.real**2 + spectrum.imag**2).mean(1).flatten(1)  # B×(H·W)
    y = torch.arange(h, device=x.device).view(h, 1) - h // 2
    xx = torch.arange(w, device=x.device).view(1, w) - w // 2
    # radii of the centred grid, shifted back to the layout of the unshifted spectrum; radii
    # beyond the last bin share one overflow bin that is dropped
    radius = torch.sqrt((y**2 + xx**2).float()).floor().long().clamp_max(bins)
    radius = torch.fft.ifftshift(radius).flatten()
    sums = power.new_zeros(power.shape[0], bins + 1).index_add_(1, radius, power)
    counts = power.new_zeros(bins + 1).index_add_(0, radius, power.new_ones(radius.shape))
    return sums[:, :bins] / counts[:bins].clamp_min(1)
