"""Perlin-noise masks and the DRAEM-style texture anomaly that FAIR and DFD train with."""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF

from anomaly_freq.synth.rng import Seed, as_generator, uniform


def perlin_noise(size: tuple[int, int], res: tuple[int, int], generator: Seed) -> torch.Tensor:
    """H×W gradient noise with ``res`` lattice cells per axis (values roughly in ±0.7).

    >>> perlin_noise((64, 64), (4, 2), torch.Generator().manual_seed(0)).shape
    torch.Size([64, 64])
    """
    h, w = size
    angles = 2 * math.pi * torch.rand(res[0] + 1, res[1] + 1, generator=as_generator(generator))
    gradients = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    y = torch.arange(h, dtype=torch.float32) * res[0] / h
    x = torch.arange(w, dtype=torch.float32) * res[1] / w
    yi, xi = y.long().clamp(max=res[0] - 1), x.long().clamp(max=res[1] - 1)
    fy, fx = (y - yi)[:, None], (x - xi)[None, :]

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = gradients[yi + dy][:, xi + dx]  # H×W×2
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: torch.Tensor) -> torch.Tensor:
        return t * t * t * (t * (t * 6 - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), ux)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), ux)
    return math.sqrt(2) * torch.lerp(top, bottom, uy)


def perlin_mask(size: tuple[int, int], generator: Seed, max_scale: int = 6,
                threshold: float = 0.5, max_rotation: float = 90.0) -> torch.Tensor:
    """1×H×W binary mask: Perlin noise with 2^a × 2^b cells (a, b ~ U{0..max_scale−1}),
    rotated by U(−max_rotation, max_rotation)°, thresholded at ``> threshold``.

    >>> m = perlin_mask((64, 64), torch.Generator().manual_seed(1))
    >>> m.shape, set(m.unique().tolist()) <= {0.0, 1.0}
    (torch.Size([1, 64, 64]), True)
    """
    generator = as_generator(generator)
    a, b = torch.randint(0, max_scale, (2,), generator=generator).tolist()
    noise = perlin_noise(size, (2**a, 2**b), generator)[None]
    angle = uniform(generator, -max_rotation, max_rotation)
    noise = TF.rotate(noise, angle, TF.InterpolationMode.BILINEAR, fill=0.0)
    return (noise > threshold).float()


def perlin_texture_anomaly(image: torch.Tensor, texture: torch.Tensor,
                           generator: Seed, beta: tuple[float, float] = (0.0, 0.8),
                           mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """I' = I·(1−M) + (1−β)·T·M + β·I·M with β ~ U(beta) and M a Perlin mask (DRAEM's blend).

    >>> g = torch.Generator().manual_seed(0)
    >>> out, m = perlin_texture_anomaly(torch.rand(3, 32, 32), torch.rand(3, 32, 32), g)
    >>> out.shape, m.shape
    (torch.Size([3, 32, 32]), torch.Size([1, 32, 32]))
    """
    generator = as_generator(generator)
    mask = perlin_mask(tuple(image.shape[-2:]), generator) if mask is None else mask
    b = uniform(generator, *beta)
    blended = image * (1 - mask) + (1 - b) * texture * mask + b * image * mask
    return blended, mask
