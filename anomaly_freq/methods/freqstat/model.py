"""freqstat: a non-learned baseline and the smallest complete example of a method plugin.

Training collects, for every pixel and colour channel, the mean and standard deviation of the
local high-frequency energy of the normal images (an FFT Gaussian high-pass, magnitude, then a
small blur). At test time the anomaly map is the absolute z-score against those statistics,
averaged over channels and smoothed; the image score is the map's maximum.
"""

from __future__ import annotations

import torch

from anomaly_freq.contract import AnomalyModule
from anomaly_freq.freq import gaussian_smooth
from anomaly_freq.registry import register_method


def gaussian_highpass(x: torch.Tensor, d0: float) -> torch.Tensor:
    """High-pass ``x`` (B×C×H×W) with a centred Gaussian transfer function of cutoff ``d0``."""
    h, w = x.shape[-2:]
    u = torch.arange(h, device=x.device, dtype=x.dtype) - h / 2
    v = torch.arange(w, device=x.device, dtype=x.dtype) - w / 2
    dist2 = u[:, None] ** 2 + v[None, :] ** 2
    transfer = 1 - torch.exp(-dist2 / (2 * d0**2))
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum * transfer, dim=(-2, -1))).real


@register_method("freqstat")
class FreqStat(AnomalyModule):
    """Per-pixel z-score of high-frequency energy; no parameters are learned by gradient.

    The arguments are the keys of ``configs/method/freqstat.yaml``, whose values are the
    defaults; ``image_size`` is the side of the images the method sees."""

    trainer_arguments = {"max_epochs": 1}

    def __init__(self, *, d0: float = 16.0, energy_sigma: float = 2.0, map_sigma: float = 4.0,
                 std_floor: float = 0.2, image_size: int = 256, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.automatic_optimization = False
        self.d0 = float(d0)
        self.energy_sigma = float(energy_sigma)
        self.map_sigma = float(map_sigma)
        self.std_floor = float(std_floor)
        side = int(image_size)
        self.register_buffer("mean", torch.zeros(1, 3, side, side))
        self.register_buffer("std", torch.ones(1, 3, side, side))
        self.register_buffer("fitted", torch.tensor(False))
        self._sum: torch.Tensor | None = None
        self._sumsq: torch.Tensor | None = None
        self._count = 0

    def energy(self, images: torch.Tensor) -> torch.Tensor:
        return gaussian_smooth(gaussian_highpass(images, self.d0).abs(), self.energy_sigma,
                               border="mirror")

    def configure_optimizers(self) -> None:
        return None

    def on_train_epoch_start(self) -> None:
        self._sum, self._sumsq, self._count = None, None, 0

    def training_step(self, batch: dict, batch_idx: int) -> None:
        e = self.energy(batch["image"]).double()
        s, sq = e.sum(0, keepdim=True), (e * e).sum(0, keepdim=True)
        self._sum = s if self._sum is None else self._sum + s
        self._sumsq = sq if self._sumsq is None else self._sumsq + sq
        self._count += e.shape[0]

    def prepare_for_inference(self) -> None:
        """The statistics of the images seen this epoch (after training, and before each of
        the test-set monitor's evaluations, which come before ``on_train_epoch_end``)."""
        if not self._count:
            return
        mean = self._sum / self._count
        var = (self._sumsq / self._count - mean * mean).clamp_min(0)
        std = var.sqrt()
        floor = self.std_floor * std.mean(dim=(-2, -1), keepdim=True)
        self.mean = mean.float()
        self.std = torch.maximum(std, floor).float()
        self.fitted.fill_(True)

    def predict_step(self, batch: dict, batch_idx: int = 0) -> dict[str, torch.Tensor]:
        # torch.export cannot branch on a buffer's value; it exports saved, fitted checkpoints
        if not torch.compiler.is_exporting() and not self.fitted:
            raise RuntimeError("freqstat has no statistics yet: fit it on training images first")
        z = ((self.energy(batch["image"]) - self.mean) / self.std).abs().mean(1, keepdim=True)
        amap = gaussian_smooth(z, self.map_sigma, border="mirror")
        return {"anomaly_map": amap, "pred_score": amap.amax(dim=(1, 2, 3))}
