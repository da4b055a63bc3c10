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


#: corner colours of the rotated copies: ``zero`` black; ``corner`` the top-left pixel's blue
#: value in every channel (DFD code's ``image[0][0, 0]`` of its BGR array)
SHOT_FILLS = ("zero", "corner")


class RotatedCopies(Dataset):
    """Each item of ``base`` repeated ``copies`` times, rotated by U(−max_angle, max_angle)°.

    The angles are fixed by ``seed``, so every epoch sees the same expanded set, as DFD's offline
    expansion does (bilinear interpolation, corners filled by ``fill``, see `SHOT_FILLS`).
    Masks rotate with nearest neighbour.
    """

    def __init__(self, base: Dataset, copies: int, max_angle: float, seed: int,
                 fill: str = "zero") -> None:
        if fill not in SHOT_FILLS:
            raise AfreqError(f"dataset.shot_fill={fill} is unknown; valid: "
                             f"{', '.join(SHOT_FILLS)}, code")
        self.base, self.copies, self.fill = base, copies, fill
        rng = np.random.default_rng(seed)
        self.angles = rng.uniform(-max_angle, max_angle, len(base) * copies).tolist()

    def __len__(self) -> int:
        return len(self.base) * self.copies

    def __getitem__(self, index: int) -> dict:
        item = dict(self.base[index // self.copies])
        angle = self.angles[index]
        image = item["image"]
        fill = float(image[2, 0, 0]) if self.fill == "corner" else 0.0
        item["image"] = TF.rotate(image, angle, TF.InterpolationMode.BILINEAR, fill=fill)
        for key in ("mask", "pro_mask"):
            if key in item:
                item[key] = TF.rotate(item[key], angle, TF.InterpolationMode.NEAREST, fill=0.0)
        item["rotation"] = torch.tensor(angle)
        item["index"] = index
        return item
