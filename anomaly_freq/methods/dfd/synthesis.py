"""DFD's image-level pseudo-anomalies (spec §3), drawn per sample in the loader workers.

The dataset option ``dataset.shot_copies`` turns each shot image into fixed rotated copies;
this module gives each copy, with probability ``p``, a Perlin-mask texture blend
(I·(1−M) + (1−β)·T·M + β·I·M, β ~ U(0, 0.8)), optionally restricted to an Otsu foreground.
With ``fixed=True`` the draw is a function of (seed, image path, rotation angle), so every copy
keeps the same pseudo-anomaly in every epoch — the official code's offline set of 80·k samples.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF

from anomaly_freq.errors import AfreqError
from anomaly_freq.synth import TextureSource, augment_texture, perlin_texture_anomaly
from anomaly_freq.synth.foreground import grey_levels, otsu_split
from anomaly_freq.synth.perlin import perlin_mask

FOREGROUND_MODES = ("all", "above", "below")


class PseudoAnomalies:
    """One image's pseudo-anomaly (`one`), or a batch's: (images, paths, angles) →
    (augmented, masks B×1×H×W, labels B)."""

    def __init__(self, probability: float, size: int, dtd_root: str | None = None,
                 beta: tuple[float, float] = (0.0, 0.8), foreground: str = "all",
                 fixed: bool = True, seed: int = 0, spare_corners: bool = True) -> None:
        if foreground not in FOREGROUND_MODES:
            raise AfreqError(f"method.foreground mode '{foreground}' is unknown; valid: "
                             f"{', '.join(FOREGROUND_MODES)}")
        if not 0.0 <= probability <= 1.0:
            raise AfreqError(f"method.anomaly_prob={probability} must lie in [0, 1]")
        self.probability, self.beta, self.foreground = probability, beta, foreground
        self.fixed, self.seed, self.spare_corners = fixed, seed, spare_corners
        self.textures = TextureSource(dtd_root, size)

    def generator(self, path: str, angle: float, stream: torch.Generator) -> torch.Generator:
        """The draw's generator: keyed by the copy when fixed, else ``stream`` (in training,
        the sample's epoch-keyed generator)."""
        if not self.fixed:
            return stream
        # the image's last three path parts (e.g. train/good/000.png), not its absolute path:
        # the pseudo-anomaly must not depend on where the dataset is stored
        name = "/".join(PurePath(path).parts[-3:])
        key = zlib.crc32(f"{self.seed}|{name}|{angle:.6f}".encode())
        return torch.Generator().manual_seed(key)

    def foreground_mask(self, image: torch.Tensor, angle: float) -> torch.Tensor:
        """1×H×W region that may receive an anomaly. With ``spare_corners`` the rotation's
        filled corners never do and Otsu ignores them; without (``dataset.shot_fill=code``),
        as in the code, Otsu sees the whole copy and anything may receive one."""
        ones = torch.ones(1, *image.shape[-2:])
        valid = ones
        if angle and self.spare_corners:
            valid = TF.rotate(ones, angle, TF.InterpolationMode.NEAREST, fill=0.0)
        if self.foreground == "all":
            return valid
        # the code's rounded 8-bit grey (cv2.cvtColor)
        above = otsu_split(grey_levels(image)[None], valid > 0.5)
        inside = above if self.foreground == "above" else ~above
        return inside.float() * valid

    def one(self, image: torch.Tensor, generator: torch.Generator,
            angle: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        size = tuple(image.shape[-2:])
        if float(torch.rand((), generator=generator)) >= self.probability:
            return image, torch.zeros(1, *size), 0.0
        texture = augment_texture(self.textures.sample(generator), generator)
        if tuple(texture.shape[-2:]) != size:
            texture = TF.resize(texture, list(size), antialias=True)
        mask = perlin_mask(size, generator) * self.foreground_mask(image, angle)
        augmented, mask = perlin_texture_anomaly(image, texture, generator, self.beta, mask)
        return augmented, mask, float(mask.any())

    def __call__(self, images: torch.Tensor, paths: Sequence[str], angles: Sequence[float],
                 stream: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stream = stream or torch.Generator().manual_seed(self.seed)
        out, masks, labels = [], [], []
        for image, path, angle in zip(images.cpu(), paths, angles, strict=True):
            augmented, mask, label = self.one(image, self.generator(path, angle, stream), angle)
            out.append(augmented)
            masks.append(mask)
            labels.append(label)
        device = images.device
        return (torch.stack(out).to(device), torch.stack(masks).to(device),
                torch.tensor(labels, device=device))


class TrainingSample:
    """DFD's per-sample transform: adds ``augmented``, ``synth_mask`` and ``synth_label``."""

    def __init__(self, synth: PseudoAnomalies) -> None:
        self.synth = synth

    def __call__(self, item: dict[str, Any], g: torch.Generator, source: Any) -> dict[str, Any]:
        angle = float(item.get("rotation", 0.0))
        generator = self.synth.generator(item["path"], angle, g)
        augmented, mask, label = self.synth.one(item["image"], generator, angle)
        return {**item, "augmented": augmented, "synth_mask": mask,
                "synth_label": torch.tensor(label)}
