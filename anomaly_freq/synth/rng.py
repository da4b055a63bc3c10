"""Random draws of the synthesisers, all taken from one CPU ``torch.Generator``."""

from __future__ import annotations

import torch

from anomaly_freq.errors import AfreqError

Seed = torch.Generator | int


def as_generator(seed: Seed) -> torch.Generator:
    """``seed`` itself when it is a generator, else a fresh CPU generator seeded with it.

    >>> as_generator(3).initial_seed()
    3
    """
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AfreqError(f"synthesis seed {seed!r} must be an int or a torch.Generator")
    return torch.Generator().manual_seed(seed)


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """A float drawn uniformly from [low, high)."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """An int drawn uniformly from [low, high), or ``low`` when that range is empty."""
    return int(torch.randint(low, max(high, low + 1), (), generator=generator))
