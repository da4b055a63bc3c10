"""Few-shot protocol: draw k training images reproducibly, optionally expand them by rotation."""

from __future__ import annotations

import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset

from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.errors import AfreqError


def draw_shots(train: list[Sample], shots: int, seed: int) -> list[Sample]:
    """``shots`` images drawn without replacement from the path-sorted training list.

    Equivalent to the DFD code's ``random.seed(seed); random.sample(sorted(files), k)``, so
    ``shot_seed=0`` reproduces its VisA draws (and its first MVTec category's).
    """
    if shots < 1 or shots > len(train):
        raise AfreqError(f"dataset.shots={shots} is out of range: the category has "
                         f"{len(train)} training images")
    ordered = sorted(train, key=lambda s: str(s.path))
    return random.Random(seed).sample(ordered, shots)


class RotatedCopies(Dataset):
    """Each item of ``base`` repeated ``copies`` times, rotated by U(−max_angle, max_angle)°.

    The angles are fixed by ``seed``, so every epoch sees the same expanded set, as DFD's offline
    expansion does (bilinear interpolation, zero fill). Masks rotate with nearest neighbour.
    """

    def __init__(self, base: Dataset, copies: int, max_angle: float, seed: int) -> None:
        self.base, self.copies = base, copies
        rng = np.random.default_rng(seed)
        self.angles = rng.uniform(-max_angle, max_angle, len(base) * copies).tolist()

    def __len__(self) -> int:
        return len(self.base) * self.copies

    def __getitem__(self, index: int) -> dict:
        item = dict(self.base[index // self.copies])
        angle = self.angles[index]
        item["image"] = TF.rotate(item["image"], angle, TF.InterpolationMode.BILINEAR, fill=0.0)
        item["mask"] = TF.rotate(item["mask"], angle, TF.InterpolationMode.NEAREST, fill=0.0)
        item["rotation"] = torch.tensor(angle)
        item["index"] = index
        return item
