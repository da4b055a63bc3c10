"""Spectra of normal vs anomalous images, for `afreq spectrum` (DFD Fig. 2).

Per frequency band (the rings of `radial_energy_spectrum`), spectrum.csv holds each group's mean
energy and their ratio. The figure draws the two spectra in dB relative to the normal images'
lowest non-zero band and, below them, the ratio in dB, on which a tenth of a decibel shows: on
one logarithmic energy axis the mean brightness (band 0, in the CSV but not drawn) and the fall
of natural images' spectra span about nine decades and hide the difference.
Figures use matplotlib's object API, whose Agg canvas needs no display and no pyplot state.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from anomaly_freq.viz.report import save_figure

GROUPS = ("normal", "anomalous")


def spectrum_rows(curves: dict[str, torch.Tensor], side: int) -> list[dict[str, float]]:
    """One row per band of a side×side image's spectrum: its edges in cycles per pixel, the
    mean energy of the normal and of the anomalous images (``curves``: N×R or R each) and
    anomalous / normal."""
    normal, anomalous = (_mean_curve(curves[name]) for name in GROUPS)
    return [{"band": r, "freq_low": r / side, "freq_high": (r + 1) / side,
             "normal_energy": n, "anomalous_energy": a, "ratio": a / n}
            for r, (n, a) in enumerate(zip(normal, anomalous, strict=True))]


def _mean_curve(curve: torch.Tensor) -> list[float]:
    return curve.detach().cpu().double().reshape(-1, curve.shape[-1]).mean(0).tolist()


def spectrum_figure(rows: list[dict[str, float]], counts: dict[str, int], title: str) -> Figure:
    """The two spectra in dB (top) and their ratio per band (bottom), from `spectrum_rows`."""
    drawn = rows[1:]  # band 0 is the mean brightness
    centre = [(r["freq_low"] + r["freq_high"]) / 2 for r in drawn]
    reference = drawn[0]["normal_energy"]
    fig = Figure(figsize=(6.4, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for name in GROUPS:
        level = [10 * math.log10(r[f"{name}_energy"] / reference) for r in drawn]
        top.plot(centre, level, label=f"{name} ({counts[name]} images)")
    top.set(ylabel="mean energy, dB re normal\nat the lowest frequency", title=title)
    top.legend()
    gain = [10 * math.log10(r["ratio"]) for r in drawn]
    peak = max(range(len(gain)), key=lambda i: abs(gain[i]))
    bottom.plot(centre, gain, color="C3", label="anomalous / normal")
    bottom.axhline(0, linestyle="--", color="grey", label="equal energy")
    bottom.set(xlim=(0, 0.5), xlabel="spatial frequency (cycles per pixel, 0.5 = Nyquist)",
               ylabel="energy ratio, dB",
               title=f"largest difference: {gain[peak]:+.1f} dB (×{drawn[peak]['ratio']:.3g}) at "
                     f"{centre[peak]:.3g} cycles/px")
    bottom.legend()
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig


def plot_spectra(curves: dict[str, torch.Tensor], path: str | Path, title: str = "",
                 side: int | None = None) -> None:
    """Write the PNG of `spectrum_figure` (atomically) for ``curves`` {"normal": N×R,
    "anomalous": M×R} from ``radial_energy_spectrum`` of side×side images (default 2R)."""
    side = side or 2 * curves["normal"].shape[-1]
    counts = {name: curves[name].reshape(-1, curves[name].shape[-1]).shape[0] for name in GROUPS}
    save_figure(spectrum_figure(spectrum_rows(curves, side), counts, title), Path(path))
