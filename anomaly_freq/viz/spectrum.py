"""`afreq spectrum`: energy against frequency for normal and anomalous test images (DFD Fig. 2)."""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from anomaly_freq import registry  # noqa: E402
from anomaly_freq.data.images import decode_image  # noqa: E402
from anomaly_freq.freq import radial_energy_spectrum  # noqa: E402
from anomaly_freq.viz.report import _save  # noqa: E402


def plot_spectra(curves: dict[str, torch.Tensor], path: Path, title: str) -> None:
    """One line per group (median over its images, band from the 25th to the 75th percentile),
    log energy axis."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        low, mid, high = torch.quantile(curve, torch.tensor([0.25, 0.5, 0.75]), dim=0).numpy()
        radius = np.arange(mid.size)
        ax.plot(radius, mid, label=f"{label} ({len(curve)} images)")
        ax.fill_between(radius, low, high, alpha=0.2)
    ax.set(yscale="log", xlabel="distance from the spectrum centre (DFT bins)",
           ylabel="mean energy |F|²", title=title)
    ax.legend()
    _save(fig, path)


def spectrum_command(cfg: DictConfig) -> Path:
    """Plot the category's normal vs anomalous test spectra into a fresh run folder."""
    source = registry.create_dataset(cfg.dataset.name, cfg)
    category = cfg.dataset.category
    if category == "all":
        category = source.categories()[0]
    _, test = source.samples(category)
    size = cfg.dataset.image_size
    curves = {}
    for label, name in ((0, "normal"), (1, "anomalous")):
        group = [s for s in test if s.label == label]
        if group:
            images = torch.stack([torch.from_numpy(decode_image(s.path, size)).permute(2, 0, 1)
                                  for s in group]).float() / 255
            curves[name] = radial_energy_spectrum(images)
    out = (Path(cfg.output.root) / "spectrum" / cfg.dataset.name / category
           / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    plot_spectra(curves, out / "spectrum.png", f"{cfg.dataset.name} / {category}")
    return out / "spectrum.png"
