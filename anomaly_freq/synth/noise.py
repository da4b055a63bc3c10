"""Feature-level anomalies: Gaussian noise on feature maps (SimpleNet, DFD σ = 0.015)."""

from __future__ import annotations

import torch

from anomaly_freq.synth.rng import Seed, as_generator


def feature_noise(features: torch.Tensor, std: float = 0.015,
                  generator: Seed | None = None) -> torch.Tensor:
    """``features`` (any shape, any device) plus N(0, std²) noise drawn on the CPU generator;
    without a generator, torch's global one. Differentiable with respect to ``features``.

    >>> feature_noise(torch.zeros(2, 4), generator=0).std() > 0
    tensor(True)
    """
    generator = None if generator is None else as_generator(generator)
    noise = torch.randn(features.shape, generator=generator, dtype=features.dtype)
    return features + std * noise.to(features.device)
