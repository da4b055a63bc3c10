"""Training synthesis in DataLoader workers, and the samplers that keep it exact.

A method's `train_transform` (see `anomaly_freq.contract`) corrupts one sample at a time inside the
training dataset, so the work runs in loader workers instead of the training step. Its random
draws come from a generator keyed by ``(seed, epoch, sample index)``; `EpochSampler` hands each
index to the dataset together with its epoch. A run is therefore the same for any number of
workers, and a sample is corrupted the same way whichever process or device it lands on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from anomaly_freq.contract import SampleTransform, keyed_generator


class SynthesisDataset(Dataset):
    """``base`` with ``transform`` applied to items asked for as ``(epoch, index)``.

    A plain integer index returns the clean item (for statistics over training images).
    """

    def __init__(self, base: Dataset, transform: SampleTransform | None, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if not isinstance(key, tuple):
            return self.base[key]
        epoch, index = key
        item = self.base[index]
        if self.transform is None:
            return item
        item = self.transform(item, keyed_generator(self.seed, "sample", epoch, index),
                              self.base)
        return {**item, "synthesised": True}


class EpochSampler(Sampler):
    """``(epoch, index)`` pairs: a shuffle seeded by ``(seed, epoch)``, then this rank's share.

    Like `DistributedSampler`, the order is padded by repetition to a multiple of ``world`` so
    every rank runs the same number of steps; rank r takes positions r, r + world, …
    Lightning calls `set_epoch` at the start of each training epoch.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.rank, self.world, self.epoch = size, seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=keyed_generator(self.seed, "order",
                                                                    self.epoch))
        total = len(self) * self.world
        order = order.repeat(math.ceil(total / max(self.size, 1)))[:total]
        for index in order[self.rank::self.world].tolist():
            yield self.epoch, index


class ShardSampler(Sampler):
    """This rank's share of an evaluation set: indices rank, rank + world, …; when the set does
    not divide evenly, the last ranks repeat its first images so that none has an empty share
    (the evaluator counts each image once when it merges the shares)."""

    def __init__(self, size: int, rank: int = 0, world: int = 1) -> None:
        padded = [i % size for i in range(math.ceil(size / world) * world)] if size else []
        self.indices = padded[rank::world]

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
