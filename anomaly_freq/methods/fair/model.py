"""FAIR: frequency-aware image restoration (Liu et al., arXiv 2309.07068).

A restoration network learns to rebuild the clean RGB image from a Butterworth high-pass of its
grey version, on normal images with synthetic corruptions (Perlin-texture blends and a large
CutPaste). Anomalies, whose low frequencies were removed, are restored as normal, so the gap
between the restored and the test image — 1 − MSGMS plus a small CIELAB colour term, smoothed
by a 21×21 box — is the anomaly map, and its maximum is the image score.
See the fair.md spec for the specification and ``configs/method/fair.yaml`` for
every option.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from anomaly_freq.contract import AnomalyModule, full_precision
from anomaly_freq.errors import AfreqError
from anomaly_freq.freq import fft_filter, laplacian, sobel, to_grey
from anomaly_freq.freq.filters import KINDS
from anomaly_freq.methods.fair.anomaly import SSIM_RANGES, anomaly_map, restoration_loss
from anomaly_freq.methods.fair.network import RestorationNet
from anomaly_freq.methods.fair.synthesis import Corruptions, TrainingSample
from anomaly_freq.registry import register_method

#: network input → number of channels (fair.md §4.4, §11 Table 6)
INPUTS = {"highpass": 1, "sobel": 2, "laplacian": 1, "grey": 1, "rgb": 3}
REFERENCE_SIZE = 256  # the paper's D0 = 30 is in DFT bins of a 256×256 image


def network_input(images: torch.Tensor, kind: str = "highpass", filter_kind: str = "butterworth",
                  d0: float = 30.0, order: int = 2, sobel_axes: str = "xy",
                  sobel_ksize: int = 3) -> torch.Tensor:
    """What the network sees of B×3×H×W [0,1] RGB images.

    ``highpass``: grey (0.299 R + 0.587 G + 0.114 B), then a centred-spectrum high-pass (FAIR);
    ``sobel``: [gx, gy] of the grey image ([gx, gx] for axes "x", as the code feeds it);
    ``laplacian``: the 4-neighbour Laplacian of the grey image; ``grey``: the grey image itself
    (the paper's ColorRe); ``rgb``: the colour image itself (the paper's denoising AE, DeAE).
    """
    if kind == "rgb":
        return images
    grey = to_grey(images)
    if kind == "highpass":
        return fft_filter(grey, filter_kind, "high", d0, order)
    if kind == "sobel":
        grads = sobel(grey, sobel_axes, sobel_ksize)
        return grads.repeat(1, 2, 1, 1) if grads.shape[1] == 1 else grads
    if kind == "laplacian":
        return laplacian(grey)
    return grey


def lr_milestones(epochs: int | None) -> list[int]:
    """Epochs after which the learning rate drops ×0.2: 80 % and 90 % of the run (640 and 720
    of 800). A milestone would fall on epoch 0 in runs under 2 epochs and cut the rate before
    the first step, so those keep it; so do runs bounded by steps only (max_epochs = -1)."""
    if not epochs or epochs < 0:
        return []
    return [m for m in (int(0.8 * epochs), int(0.9 * epochs)) if m > 0]


@register_method("fair")
class FAIR(AnomalyModule):
    """One restoration model per category.

    The arguments are the keys of ``configs/method/fair.yaml``, which documents them, with its
    values as defaults (``method.filter.kind`` → ``filter_kind``, ``model.base_width`` →
    ``base_width``, ``synth.dtd_root`` → ``dtd_root``); ``image_size`` is the side of the images
    the network sees."""

    speed_modules = ("network",)

    def __init__(self, *, input: str = "highpass", filter_kind: str = "butterworth",
                 filter_d0: float = 30.0, filter_order: int = 2, filter_scale_d0: bool = True,
                 sobel_axes: str = "xy", sobel_ksize: int = 3, cutpaste_prob: float = 0.25,
                 texture_prob: float = 0.25, cutpaste_mode: str = "official",
                 texture_source: str = "dtd", beta_max: float = 0.8, rotate_prob: float = 0.3,
                 rotate_max: float = 90.0, ssim_range: str = "code", lr: float = 1.0e-4,
                 msgms_term: bool = True, msgms_scales: int = 2, color_term: bool = True,
                 color_weight: float = 3.0e-4, lab_bgr_quirk: bool = True,
                 smooth_kernel: int = 21, base_width: int = 128, dtd_root: str | None = None,
                 image_size: int = 256, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.side = int(image_size)
        self.input_kind = str(input)
        if self.input_kind not in INPUTS:
            raise AfreqError(f"method.input '{self.input_kind}' is unknown; valid: "
                             f"{', '.join(INPUTS)}")
        filter_kind = str(filter_kind)
        if filter_kind not in KINDS:
            raise AfreqError(f"method.filter.kind '{filter_kind}' is unknown; valid: "
                             f"{', '.join(KINDS)}")
        # keep the paper's normalised cutoff (30/256 cycles per pixel) at other resolutions
        self.d0 = float(filter_d0) * (self.side / REFERENCE_SIZE if filter_scale_d0 else 1.0)
        if self.d0 <= 0:
            raise AfreqError(f"method.filter.d0={filter_d0} must be positive")
        # picklable, so that the loader workers compute the training inputs too
        self.input_fn = partial(network_input, kind=self.input_kind, filter_kind=filter_kind,
                                d0=self.d0, order=int(filter_order), sobel_axes=str(sobel_axes),
                                sobel_ksize=int(sobel_ksize))
        self.msgms_term, self.color_term = bool(msgms_term), bool(color_term)
        if not (self.msgms_term or self.color_term):
            raise AfreqError("method.msgms_term and method.color_term are both false; "
                             "the anomaly map needs at least one of them")
        self.color_weight, self.bgr_quirk = float(color_weight), bool(lab_bgr_quirk)
        self.smooth, self.scales = int(smooth_kernel), int(msgms_scales)
        self.lr = float(lr)
        self.ssim_range = str(ssim_range)
        if self.ssim_range not in SSIM_RANGES:
            raise AfreqError(f"method.ssim_range={self.ssim_range} is unknown; valid: "
                             f"{', '.join(SSIM_RANGES)}")
        width = int(base_width)
        if width < 1:
            raise AfreqError(f"model.base_width={width} must be a positive integer")
        if self.side % 16:
            raise AfreqError(f"FAIR needs an image side divisible by 16 (4 poolings), got "
                             f"{self.side}; set dataset.image_size accordingly")
        self.cutpaste_mode, self.texture_source = str(cutpaste_mode), str(texture_source)
        self.network = RestorationNet(INPUTS[self.input_kind], 3, width)
        self.corruptions = Corruptions(
            self.side, self.seed, dtd_root, cutpaste_prob=float(cutpaste_prob),
            texture_prob=float(texture_prob), rotate_prob=float(rotate_prob),
            rotate_max=float(rotate_max), beta=(0.0, float(beta_max)),
            cutpaste_mode=self.cutpaste_mode, texture_source=self.texture_source)

    # ---------------------------------------------------------------- shared path

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        with full_precision(images):
            return self.input_fn(images.float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Restore B×3×H×W [0,1] RGB images from their high-pass grey version (unclipped)."""
        return self.network(self.network_input(images))

    def protocol(self) -> dict[str, Any]:
        return {"network_input": self.input_kind, "cutpaste_mode": self.cutpaste_mode,
                "ssim_range": self.ssim_range, "texture_source": self.texture_source}

    def train_transform(self) -> TrainingSample:
        """Corruption and network input per sample, in the loader workers."""
        return TrainingSample(self.corruptions, self.input_fn)

    # ---------------------------------------------------------------- training

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.lr, betas=(0.9, 0.999))
        epochs = self.trainer.max_epochs if self._trainer is not None else 800
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, lr_milestones(epochs),
                                                         gamma=0.2)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        batch = self.with_synthesis(batch)
        restored, target = self.network(batch["input"]), batch["target"]
        with full_precision(restored):
            loss = restoration_loss(restored.float(), target, self.ssim_range)
        if not torch.isfinite(loss):
            raise AfreqError(
                f"FAIR training diverged: the loss is {loss.item()} at epoch "
                f"{self.current_epoch}, step {self.global_step} (method.lr={self.lr}); "
                "training stopped and no result was written. Lower method.lr or check the "
                "training images.")
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=target.shape[0])
        return loss

    # ---------------------------------------------------------------- inference

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> dict[str, torch.Tensor]:
        images = batch["image"]
        restored = self(images)
        with full_precision(restored):  # the map in fp32 also under AMP
            amap = anomaly_map(restored.float(), images, msgms_term=self.msgms_term,
                               color_term=self.color_term, color_weight=self.color_weight,
                               bgr_quirk=self.bgr_quirk, smooth=self.smooth,
                               scales=self.scales)
        return {"anomaly_map": amap, "pred_score": amap.amax(dim=(1, 2, 3))}
