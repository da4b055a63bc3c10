"""MVTec AD: 15 categories in its own on-disk layout (`anomaly_freq.data.mvtec_layout`)."""

from __future__ import annotations

from anomaly_freq.data.mvtec_layout import Sample, has_layout, layout_folders, read_category
from anomaly_freq.data.sources import DatasetSource, refuse_without_layout
from anomaly_freq.errors import AfreqError
from anomaly_freq.registry import register_dataset

TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush",
           "transistor", "zipper")


@register_dataset("mvtec_ad")
class MVTecADSource(DatasetSource):
    """MVTec AD, read from ``<root>/<category>/``: the 15 official categories, then any other
    folder there in the same layout (a category of one's own)."""

    expected = "bottle/, cable/, ..."

    def categories(self) -> list[str]:
        official = sorted(TEXTURES + OBJECTS)
        return official + [c for c in layout_folders(self.root()) if c not in official]

    def present(self) -> list[str]:
        return [c for c in self.categories() if has_layout(self.root() / c)]

    def group(self, category: str) -> str:
        return ("texture" if category in TEXTURES
                else "object" if category in OBJECTS else "")

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
