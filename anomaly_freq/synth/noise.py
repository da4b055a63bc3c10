"""Feature-level anomalies: Gaussian noise on feature maps (SimpleNet, DFD σ = 0.015)."""

from __future__ import annotations

import torch


def feature_noise(features: torch.Tensor, std: float = 0.015,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``features`` plus N(0, std²) noise of the same shape.

    >>> feature_noise(torch.zeros(2, 4), generator=torch.Generator().manual_seed(0)).std() > 0
    tensor(True)
    """
    noise = torch.randn(features.shape, generator=generator, dtype=features.dtype)
    return features + std * noise.to(features.device)
