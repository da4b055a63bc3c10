"""Dataset sources: a registered class per dataset that lists categories and their samples."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from anomaly_freq.data import synthetic, visa
from anomaly_freq.data.mvtec_layout import (
    Sample,
    has_layout,
    layout_folders,
    read_category,
    require_layout,
)
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
    """Base class: `categories()`, `group(category)` and `samples(category)`; `present()` for
    the categories on disk when some may be missing."""

    #: what ``dataset.root`` should hold, for the message when none of it is there
    expected = ""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def categories(self) -> list[str]:
        raise NotImplementedError

    def present(self) -> list[str]:
        """The categories whose data is on disk, in the order of `categories()`."""
        return self.categories()

    def not_found(self) -> AfreqError:
        return missing_root(self.cfg.dataset.name, self.root(), self.expected)

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


def refuse_without_layout(source: DatasetSource, category: str, *folders: Path) -> None:
    """A category folder asked for by name that lacks the layout is named with what it lacks,
    rather than called an unknown category."""
    if category not in source.categories():
        for folder in folders:
            if folder.is_dir():
                require_layout(folder)


@register_dataset("mvtec_ad")
class MVTecADSource(DatasetSource):
    """MVTec AD, read from ``<root>/<category>/``: the 15 official categories, then any other
    folder there in the same layout (a category of one's own)."""

    expected = "bottle/, cable/, ..."

    def categories(self) -> list[str]:
        official = sorted(MVTEC_TEXTURES + MVTEC_OBJECTS)
        return official + [c for c in layout_folders(self.root()) if c not in official]

    def present(self) -> list[str]:
        return [c for c in self.categories() if has_layout(self.root() / c)]

    def group(self, category: str) -> str:
        return ("texture" if category in MVTEC_TEXTURES
                else "object" if category in MVTEC_OBJECTS else "")

    def check_category(self, category: str) -> None:
        refuse_without_layout(self, category, self.root() / category)
        super().check_category(category)

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        root = self.root()
        if not (root / category).is_dir():
            if not self.present():
                raise self.not_found()
            raise AfreqError(f"MVTec AD category folder {root / category} is missing; "
                             "the archive may be incompletely extracted")
        return read_category(root / category)


@register_dataset("visa")
class VisASource(DatasetSource):
    """VisA with the 1cls split (raw archive converted once, or an already-converted tree); other
    folders in the converted layout are categories too."""

    expected = ("candle/Data/..., split_csv/1cls.csv (raw) or visa_pytorch/<object>/ "
                "(converted)")

    def categories(self) -> list[str]:
        return [*visa.OBJECTS, *visa.extra_objects(self.root())]

    def present(self) -> list[str]:
        return [c for c in self.categories() if visa.is_present(self.root(), c)]

    def group(self, category: str) -> str:
        return visa.GROUPS.get(category, "")

    def check_category(self, category: str) -> None:
        root = self.root()
        refuse_without_layout(self, category, *visa.candidates(root, category))
        super().check_category(category)

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        root = self.root()
        folder = visa.category_dir(root, category) if root.is_dir() else None
        if folder is None:
            raise self.not_found()
        return read_category(folder)


#: where dataset=folder finds training images: its own layout, then MVTec AD's
FOLDER_TRAIN_SUBDIRS = ("good", "train/good")


def folder_train_subdir(folder: Path) -> str | None:
    return next((s for s in FOLDER_TRAIN_SUBDIRS if has_layout(folder, s)), None)


def no_folder_layout(folder: Path, more: str = "") -> AfreqError:
    return AfreqError(
        f"{folder} is in no layout dataset=folder reads: it needs good/ and test/<defect>/, or "
        f"train/good/ and test/<defect>/ as MVTec AD has them{more}; see 'Your own images' in "
        "the README")


@register_dataset("folder")
class FolderSource(DatasetSource):
    """A user's own images in either layout, told apart by what is on disk:

    - ``<root>/good/`` to train on, ``<root>/test/good`` and ``<root>/test/<defect>`` to test;
    - the MVTec AD layout, ``<root>/train/good/`` and ``<root>/test/<defect>``;
    - a folder of such category folders, ``<root>/<category>/...`` in either layout.

    Masks are optional, under ``ground_truth/<defect>/<stem>_mask.png`` (or ``<stem>.png``). A
    single category is named after the root folder unless ``dataset.category`` names it.
    """

    def root(self) -> Path:
        if not self.cfg.dataset.get("root"):
            raise AfreqError("dataset=folder needs dataset.root=<folder with good/ and test/>")
        root = Path(self.cfg.dataset.root)
        if not root.is_dir():
            raise AfreqError(f"dataset.root {root} does not exist")
        return root

    def categories(self) -> list[str]:
        root = self.root()
        if folder_train_subdir(root):
            named = self.cfg.dataset.category
            return [root.resolve().name if named == "all" else named]
        found = sorted(p.name for p in root.iterdir()
                       if not p.name.startswith(".") and p.is_dir() and folder_train_subdir(p))
        if not found:
            raise no_folder_layout(root, ", or category folders that hold either")
        return found

    def check_category(self, category: str) -> None:
        folder = self.root() / category
        if category not in self.categories() and folder.is_dir():
            raise no_folder_layout(folder)
        super().check_category(category)

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        root = self.root()
        folder = root if folder_train_subdir(root) else root / category
        return read_category(folder, train_subdir=folder_train_subdir(folder), masks="optional")
