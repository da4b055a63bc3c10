"""dataset=folder: a user's own images, in a layout of their own or in MVTec AD's."""

from __future__ import annotations

from pathlib import Path

from anomaly_freq.data.mvtec_layout import Sample, has_layout, read_category
from anomaly_freq.data.sources import DatasetSource
from anomaly_freq.errors import AfreqError
from anomaly_freq.registry import register_dataset

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
