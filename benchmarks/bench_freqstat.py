"""freqstat scoring: batched torch against a per-image NumPy/SciPy loop of the same maths."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from anomaly_freq.methods.freqstat import FreqStat
from benchmarks.common import Section, best_time

BATCH, SIZE = 32, 256


def _numpy_reference(images: np.ndarray, d0: float, sigma: float) -> np.ndarray:
    """Per image and channel: centred Gaussian high-pass, magnitude, Gaussian blur."""
    h, w = images.shape[-2:]
    u = np.arange(h)[:, None] - h / 2
    v = np.arange(w)[None, :] - w / 2
    transfer = 1 - np.exp(-(u**2 + v**2) / (2 * d0**2))
    out = np.empty_like(images)
    for i in range(images.shape[0]):
        for c in range(images.shape[1]):
            spec = np.fft.fftshift(np.fft.fft2(images[i, c]))
            hp = np.fft.ifft2(np.fft.ifftshift(spec * transfer)).real
            out[i, c] = gaussian_filter(np.abs(hp), sigma, mode="mirror", truncate=4.0)
    return out


def run() -> Section:
    model = FreqStat().eval()
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    array = images.numpy().astype(np.float64)

    with torch.no_grad():
        t_torch = best_time(lambda: model.energy(images))
        diff = np.abs(model.energy(images).double().numpy()
                      - _numpy_reference(array, model.d0, model.energy_sigma))
    t_numpy = best_time(lambda: _numpy_reference(array, model.d0, model.energy_sigma), repeats=3)
    section = Section(
        "freqstat high-frequency energy (32×3×256×256)",
        ["implementation", "time per batch (s)", "images/s", "speed-up"],
    )
    section.rows.append(["per-image NumPy + SciPy loop (reference)", f"{t_numpy:.3f}",
                         f"{BATCH / t_numpy:.1f}", "1.0×"])
    section.rows.append(["batched torch (CPU)", f"{t_torch:.3f}", f"{BATCH / t_torch:.1f}",
                         f"{t_numpy / t_torch:.1f}×"])
    section.notes.append(f"Largest absolute difference between the two outputs: {diff.max():.1e}.")
    return section
