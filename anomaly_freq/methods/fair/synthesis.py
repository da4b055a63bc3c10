"""FAIR's training corruptions (fair.md §3.1–3.4), drawn per sample in the loader workers.

Per image: with p = 0.3 a rotation by U(−90°, 90°) (bilinear, black fill) that the target
shares; then 25 % a large CutPaste, 25 % a Perlin-mask texture blend, 50 % left clean. The
restoration target is always the clean (possibly rotated) image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF

from anomaly_freq.errors import AfreqError
from anomaly_freq.synth import (
    TextureSource,
    augment_texture,
    large_cutpaste,
    perlin_texture_anomaly,
)
from anomaly_freq.synth.textures import DRAEM_AUGMENTERS

CUTPASTE_MODES = ("official", "described")
TEXTURE_SOURCES = ("dtd", "training")


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _hue_shift(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """FAIR_noDTD's HSV hue shift: +0…90 on OpenCV's 0–180 hue scale, i.e. up to half a turn."""
    return TF.adjust_hue(t, _uniform(g, 0.0, 0.5))


def _channel_dropout(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """FAIR_noDTD's Dropout2d(p = 0.5): zero each channel with p = 0.5, keep at least one."""
    keep = torch.rand(t.shape[0], generator=g) >= 0.5
    if not keep.any():
        keep[int(torch.randint(t.shape[0], (), generator=g))] = True
    return t * keep.view(-1, 1, 1).to(t)


NODTD_AUGMENTERS = (*DRAEM_AUGMENTERS, _hue_shift, _channel_dropout)


def augment_training_texture(texture: torch.Tensor, g: torch.Generator,
                             count: int = 3) -> torch.Tensor:
    """FAIR_noDTD: 3 distinct augmenters from DRAEM's 10 plus hue shift and channel dropout."""
    return augment_texture(texture, g, count, NODTD_AUGMENTERS)


class Corruptions:
    """The corruption mix of one image (`one`), or of a batch from one seeded stream."""

    def __init__(self, size: int, seed: int, dtd_root: str | None = None,
                 cutpaste_prob: float = 0.25, texture_prob: float = 0.25,
                 rotate_prob: float = 0.3, rotate_max: float = 90.0,
                 beta: tuple[float, float] = (0.0, 0.8), cutpaste_mode: str = "official",
                 texture_source: str = "dtd") -> None:
        if cutpaste_mode not in CUTPASTE_MODES:
            raise AfreqError(f"method.cutpaste_mode '{cutpaste_mode}' is unknown; valid: "
                             f"{', '.join(CUTPASTE_MODES)}")
        if texture_source not in TEXTURE_SOURCES:
            raise AfreqError(f"method.texture_source '{texture_source}' is unknown; valid: "
                             f"{', '.join(TEXTURE_SOURCES)}")
        for name, p in (("cutpaste_prob", cutpaste_prob), ("texture_prob", texture_prob),
                        ("rotate_prob", rotate_prob)):
            if not 0.0 <= p <= 1.0:
                raise AfreqError(f"method.{name}={p} must lie in [0, 1]")
        if cutpaste_prob + texture_prob > 1.0:
            raise AfreqError(f"method.cutpaste_prob + method.texture_prob = "
                             f"{cutpaste_prob + texture_prob} exceeds 1")
        self.cutpaste_prob, self.texture_prob = cutpaste_prob, texture_prob
        self.rotate_prob, self.rotate_max, self.beta = rotate_prob, rotate_max, beta
        self.faithful = cutpaste_mode == "official"
        self.texture_source = texture_source
        self.textures = TextureSource(dtd_root, size) if texture_source == "dtd" else None
        self.seed = seed  # of `__call__`'s draws; no generator is kept, so workers can unpickle

    def _texture(self, g: torch.Generator, size: tuple[int, int],
                 pick: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        if self.textures is None:  # FAIR_noDTD: another training image of the category
            return augment_training_texture(pick(g), g)
        texture = augment_texture(self.textures.sample(g), g)
        if tuple(texture.shape[-2:]) != size:
            texture = TF.resize(texture, list(size), antialias=True)
        return texture

    def one(self, image: torch.Tensor, g: torch.Generator,
            pick: Callable[[torch.Generator], torch.Tensor]
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(corrupted, target, mask 1×H×W) of one 3×H×W image; ``pick(g)`` draws another
        training image (FAIR_noDTD's texture)."""
        size = tuple(image.shape[-2:])
        if self.rotate_prob and _uniform(g) < self.rotate_prob:
            angle = _uniform(g, -self.rotate_max, self.rotate_max)
            image = TF.rotate(image, angle, TF.InterpolationMode.BILINEAR, fill=0.0)
        u = _uniform(g)
        if u < self.cutpaste_prob:
            corrupted, mask = large_cutpaste(image, g, faithful=self.faithful)
        elif u < self.cutpaste_prob + self.texture_prob:
            corrupted, mask = perlin_texture_anomaly(image, self._texture(g, size, pick), g,
                                                     self.beta)
        else:
            corrupted, mask = image, torch.zeros(1, *size)
        return corrupted, image, mask

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B×3×H×W → (corrupted, target, mask B×1×H×W), textures picked from the batch, all
        draws from ``generator`` (default: a fresh one seeded with this object's seed)."""
        g = generator or torch.Generator().manual_seed(self.seed)
        batch = images.detach().float().cpu()

        def pick(g: torch.Generator) -> torch.Tensor:
            return batch[int(torch.randint(batch.shape[0], (), generator=g))]

        parts = [self.one(image, g, pick) for image in batch]
        corrupted, target, mask = (torch.stack(p).to(images.device) for p in zip(*parts,
                                                                                  strict=True))
        return corrupted, target, mask


class TrainingSample:
    """FAIR's per-sample transform: adds ``input`` (what the network sees of the corrupted
    image), ``target`` (the clean, possibly rotated image) and ``synth_mask``."""

    def __init__(self, corruptions: Corruptions,
                 network_input: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.corruptions, self.network_input = corruptions, network_input

    def __call__(self, item: dict[str, Any], g: torch.Generator, source: Any) -> dict[str, Any]:
        def pick(g: torch.Generator) -> torch.Tensor:
            return source[int(torch.randint(len(source), (), generator=g))]["image"]

        corrupted, target, mask = self.corruptions.one(item["image"], g, pick)
        return {**item, "input": self.network_input(corrupted[None])[0], "target": target,
                "synth_mask": mask}
