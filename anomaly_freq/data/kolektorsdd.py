"""KolektorSDD: ``kosNN/PartN.jpg`` with ``PartN_label.bmp`` (399 images, 52 defective).

The paper states no split, so ours is fixed by ``dataset.split_seed``: every defective image and
``dataset.test_normal_fraction`` of the defect-free ones are tested, the rest train. An image is
defective when its label image has any non-zero pixel. The drawn lists are in each run folder
(train_files.txt, scores.csv); docs/protocol.md documents the split.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from anomaly_freq.data.images import open_image
from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.data.sources import DatasetSource
from anomaly_freq.errors import AfreqError
from anomaly_freq.registry import register_dataset


def find_parts(root: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs under ``root`` or ``root/KolektorSDD``."""
    base = root / "KolektorSDD" if (root / "KolektorSDD").is_dir() else root
    folders = sorted(p for p in base.glob("kos*") if p.is_dir())
    pairs = []
    for folder in folders:
        for image in sorted(folder.glob("Part*.jpg")):
            label = image.with_name(f"{image.stem}_label.bmp")
            if not label.is_file():
                raise AfreqError(f"KolektorSDD image {image} has no label image {label.name}")
            pairs.append((image, label))
    return pairs


def split(pairs: list[tuple[Path, Path]], test_fraction: float, seed: int):
    """(train, test): all defective images and a seeded share of the normal ones are tested."""
    defective, normal = [], []
    for image, label in pairs:
        has_defect = bool(np.asarray(open_image(label).convert("L")).any())
        (defective if has_defect else normal).append((image, label))
    held_out = set(random.Random(seed).sample(range(len(normal)),
                                              round(test_fraction * len(normal))))
    train = [Sample(img, 0, "good") for i, (img, _) in enumerate(normal) if i not in held_out]
    test = [Sample(img, 0, "good") for i, (img, _) in enumerate(normal) if i in held_out]
    test += [Sample(img, 1, "defect", lab) for img, lab in defective]
    return train, test


@register_dataset("kolektorsdd")
class KolektorSource(DatasetSource):
    expected = "kos01/ … kos50/ (Part<N>.jpg + labels)"

    def categories(self) -> list[str]:
        return ["kolektorsdd"]

    def present(self) -> list[str]:
        root = self.root()
        base = root / "KolektorSDD" if (root / "KolektorSDD").is_dir() else root
        return self.categories() if any(base.glob("kos*/Part*.jpg")) else []

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        root = self.root()
        pairs = find_parts(root) if root.is_dir() else []
        if not pairs:
            raise self.not_found()
        d = self.cfg.dataset
        if not 0 < d.test_normal_fraction < 1:
            raise AfreqError(f"dataset.test_normal_fraction={d.test_normal_fraction} must be "
                             "between 0 and 1")
        return split(pairs, d.test_normal_fraction, d.split_seed)
