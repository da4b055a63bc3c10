"""Dataset sources: a registered class per dataset that lists categories and their samples."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from anomaly_freq.data import synthetic, visa
from anomaly_freq.data.mvtec_layout import Sample, read_category
from anomaly_freq.errors import AfreqError
from anomaly_freq.registry import register_dataset

MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw",
                 "toothbrush", "transistor", "zipper")


def cache_dir() -> Path:
    """Where generated data and decoded images live: $AFREQ_CACHE, else ~/.cache/anomaly_freq."""
    if "AFREQ_CACHE" in os.environ:
        return Path(os.environ["AFREQ_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anomaly_freq"


class DatasetSource:
    """Base class: `categories()`, `group(category)` and `samples(category)`."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def categories(self) -> list[str]:
        raise NotImplementedError

    def group(self, category: str) -> str:
        return ""

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        raise NotImplementedError

    def check_category(self, category: str) -> None:
        valid = self.categories()
        if category not in valid:
            raise AfreqError(
                f"unknown category '{category}' for dataset '{self.cfg.dataset.name}'; "
                f"valid: {', '.join(valid)} (or all)"
            )

    def root(self) -> Path:
        root = self.cfg.dataset.get("root")
        return Path(root) if root else Path("datasets") / self.cfg.dataset.name


@register_dataset("synthetic")
class SyntheticSource(DatasetSource):
    """The embedded procedural set (see `anomaly_freq.data.synthetic`)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        d = cfg.dataset
        self.spec = synthetic.SyntheticSpec(
            seed=d.seed, size=d.size, n_train=d.n_train, n_test_good=d.n_test_good,
            n_test_per_defect=d.n_test_per_defect, defect_strength=d.defect_strength,
        )

    def root(self) -> Path:
        base = Path(self.cfg.dataset.root) if self.cfg.dataset.root else cache_dir()
        return synthetic.ensure_generated(base / "synthetic", self.spec)

    def categories(self) -> list[str]:
        return list(synthetic.CATEGORIES)

    def group(self, category: str) -> str:
        return synthetic.CATEGORIES[category].group

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        return read_category(self.root() / category)


def missing_root(name: str, root: Path, expected: str) -> AfreqError:
    return AfreqError(
        f"{name} not found at {root}: download it with `afreq data download {name} --root "
        f"{root}`, or point dataset.root at the folder that holds {expected}"
    )


@register_dataset("mvtec_ad")
class MVTecADSource(DatasetSource):
    """MVTec AD, read from ``<root>/<category>/`` (15 categories)."""

    def categories(self) -> list[str]:
        return sorted(MVTEC_TEXTURES + MVTEC_OBJECTS)

    def group(self, category: str) -> str:
        return "texture" if category in MVTEC_TEXTURES else "object"

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        root = self.root()
        if not (root / category).is_dir():
            if not root.is_dir() or not any((root / c).is_dir() for c in self.categories()):
                raise missing_root("mvtec_ad", root, "bottle/, cable/, ...")
            raise AfreqError(f"MVTec AD category folder {root / category} is missing; "
                             "the archive may be incompletely extracted")
        return read_category(root / category)


@register_dataset("visa")
class VisASource(DatasetSource):
    """VisA with the 1cls split (raw archive converted once, or an already-converted tree)."""

    def categories(self) -> list[str]:
        return list(visa.OBJECTS)

    def group(self, category: str) -> str:
        return visa.GROUPS[category]

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        root = self.root()
        folder = visa.category_dir(root, category) if root.is_dir() else None
        if folder is None:
            raise missing_root("visa", root, "candle/Data/..., split_csv/1cls.csv (raw) or "
                                "visa_pytorch/<object>/ (converted)")
        return read_category(folder)


@register_dataset("folder")
class FolderSource(DatasetSource):
    """A user's own images: ``good/`` to train on, ``test/good`` and ``test/<defect>`` to test,
    masks optional under ``ground_truth/<defect>/<stem>_mask.png`` (or ``<stem>.png``)."""

    def root(self) -> Path:
        if not self.cfg.dataset.get("root"):
            raise AfreqError("dataset=folder needs dataset.root=<folder with good/ and test/>")
        root = Path(self.cfg.dataset.root)
        if not root.is_dir():
            raise AfreqError(f"dataset.root {root} does not exist")
        return root

    def categories(self) -> list[str]:
        return [self.root().resolve().name]

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        return read_category(self.root(), train_subdir="good", masks="optional")
