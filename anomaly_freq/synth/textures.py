"""Textures for the Perlin anomaly: DTD when the user has it, else a procedural generator.

DRAEM, FAIR and DFD paste textures from the Describable Textures Dataset (DTD). It cannot be
downloaded on every machine, so without ``synth.dtd_root`` textures are generated procedurally
(smooth noise, stripes and checks in random colours) — a documented deviation from the papers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from anomaly_freq.data.images import decode_image
from anomaly_freq.errors import AfreqError
from anomaly_freq.synth.rng import Seed, as_generator, uniform

_EXTENSIONS = (".jpg", ".jpeg", ".png")


def procedural_texture(size: int, generator: Seed) -> torch.Tensor:
    """3×size×size texture: a random mix of smooth noise, stripes and a checkerboard.

    >>> procedural_texture(32, torch.Generator().manual_seed(0)).shape
    torch.Size([3, 32, 32])
    """
    generator = as_generator(generator)
    cells = int(torch.randint(2, 17, (), generator=generator))
    noise = torch.rand(1, 3, cells, cells, generator=generator)
    smooth = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0]
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    angle, period = uniform(generator, 0, math.pi), uniform(generator, 3, size / 4)
    stripes = torch.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    checks = ((x // max(1, int(period)) + y // max(1, int(period))) % 2).float() * 2 - 1
    weights = torch.rand(3, generator=generator)
    colour = torch.rand(3, 1, 1, generator=generator)
    texture = weights[0] * smooth + colour * (0.5 + 0.25 * weights[1] * stripes
                                              + 0.25 * weights[2] * checks)
    texture = texture - texture.amin(dim=(1, 2), keepdim=True)
    return (texture / texture.amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)).clamp(0, 1)


Augmenter = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

DRAEM_AUGMENTERS: tuple[Augmenter, ...] = (
    lambda t, g: TF.adjust_gamma(t, uniform(g, 0.5, 2.0)),
    lambda t, g: (t * uniform(g, 0.8, 1.2) + uniform(g, -30, 30) / 255).clamp(0, 1),
    lambda t, g: TF.adjust_sharpness(t, uniform(g, 0.0, 2.0)),
    lambda t, g: TF.adjust_hue(t, uniform(g, -50, 50) / 360),
    lambda t, g: TF.solarize(t, uniform(g, 32, 128) / 255) if uniform(g, 0, 1) < 0.5 else t,
    lambda t, g: TF.posterize((t * 255).to(torch.uint8), int(torch.randint(1, 9, (),
                              generator=g))).float() / 255,
    lambda t, g: TF.invert(t),
    lambda t, g: TF.autocontrast(t),
    lambda t, g: TF.equalize((t * 255).to(torch.uint8)).float() / 255,
    lambda t, g: TF.rotate(t, uniform(g, -45, 45), TF.InterpolationMode.BILINEAR),
)


def augment_texture(texture: torch.Tensor, generator: Seed, count: int = 3,
                    augmenters: Sequence[Augmenter] = DRAEM_AUGMENTERS) -> torch.Tensor:
    """``count`` distinct augmenters in random order, by default from DRAEM's list (gamma,
    brightness, sharpness, hue, solarize, posterize, invert, autocontrast, equalize, rotate) in
    their torchvision versions.

    >>> augment_texture(torch.rand(3, 16, 16), 0).shape
    torch.Size([3, 16, 16])
    """
    generator = as_generator(generator)
    for index in torch.randperm(len(augmenters), generator=generator)[:count].tolist():
        texture = augmenters[index](texture, generator)
    return texture.clamp(0, 1)


class TextureSource:
    """Random 3×size×size textures in [0, 1]: every .jpg/.png under ``dtd_root`` (searched
    recursively) when it is given, else procedural ones.

    >>> TextureSource(None, 16).sample(0).shape
    torch.Size([3, 16, 16])
    """

    def __init__(self, dtd_root: str | Path | None, size: int) -> None:
        self.size = size
        self.files: list[Path] = []
        if dtd_root:
            root = Path(dtd_root)
            if not root.is_dir():
                raise AfreqError(f"synth.dtd_root {root} does not exist; point it at DTD's "
                                 "images/ folder or set synth.dtd_root=null for procedural "
                                 "textures")
            self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _EXTENSIONS)
            if not self.files:
                raise AfreqError(f"synth.dtd_root {root} holds no .jpg/.png textures")

    @property
    def procedural(self) -> bool:
        """True when textures are generated rather than read from DTD."""
        return not self.files

    def sample(self, generator: Seed) -> torch.Tensor:
        """One texture: a uniformly drawn file, or a procedural one."""
        generator = as_generator(generator)
        if self.procedural:
            return procedural_texture(self.size, generator)
        path = self.files[int(torch.randint(len(self.files), (), generator=generator))]
        return torch.from_numpy(decode_image(path, self.size)).permute(2, 0, 1).float() / 255
