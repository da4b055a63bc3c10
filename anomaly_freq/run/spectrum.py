"""`afreq spectrum`: where in frequency a category's anomalous test images differ from its
normal ones; the numbers and the plot come from `anomaly_freq.viz.spectrum`."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from anomaly_freq import registry
from anomaly_freq.data.images import decode_image
from anomaly_freq.errors import AfreqError
from anomaly_freq.files import write_csv
from anomaly_freq.freq import radial_energy_spectrum
from anomaly_freq.viz.spectrum import GROUPS, plot_spectra, spectrum_rows


def spectrum_command(cfg: DictConfig) -> Path:
    """spectrum.png and spectrum.csv of the category's normal vs anomalous test images, in a
    fresh folder under ``<output.root>/spectrum/``; returns the folder."""
    d = cfg.dataset
    source = registry.create_dataset(d.name, cfg)
    category = d.category
    if category == "all":  # the first category on disk
        category = next(iter(source.present()), None)
        if category is None:
            raise source.not_found()
    _, test = source.samples(category)
    curves = {}
    for label, name in enumerate(GROUPS):
        group = [s for s in test if s.label == label]
        if not group:
            raise AfreqError(f"category {category} of {d.name} has no {name} test images; the "
                             "spectrum compares normal with anomalous ones")
        images = torch.stack([torch.from_numpy(decode_image(s.path, d.image_size, d.center_crop,
                                                            d.resize)).permute(2, 0, 1)
                              for s in group]).float() / 255
        curves[name] = radial_energy_spectrum(images)
    side = images.shape[-1]
    out = Path(cfg.output.root) / "spectrum" / d.name / category / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "spectrum.csv", spectrum_rows(curves, side))
    plot_spectra(curves, out / "spectrum.png", f"{d.name} / {category}: radial spectrum of the "
                 "test images", side)
    return out
