"""DAGM 2007: ``Class<N>/{Train,Test}/*.PNG`` with ``Label/Labels.txt`` and ``<stem>_label.PNG``.

Labels.txt lists one image per line (after a one-number header line): an index, the defect flag
(0 or 1), the image file name, an unused column, and for defective images the label file name.
The label images mark the defect region (weak, elliptical labels); they become the masks. One
model per class, trained on the defect-free training images only.
"""

from __future__ import annotations

from pathlib import Path

from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.data.sources import DatasetSource
from anomaly_freq.errors import AfreqError
from anomaly_freq.registry import register_dataset

CLASSES = tuple(f"class{i}" for i in range(1, 11))


def read_labels(split_dir: Path) -> list[Sample]:
    """Samples of one ``Train`` or ``Test`` folder from its ``Label/Labels.txt``."""
    labels = split_dir / "Label" / "Labels.txt"
    if not labels.is_file():
        raise AfreqError(f"{labels} is missing: every DAGM class folder needs its Label/Labels.txt "
                         "(re-extract the class archive)")
    samples = []
    for number, line in enumerate(labels.read_text().splitlines(), start=1):
        fields = line.split()
        if len(fields) <= 1:  # the header line holds a single number
            continue
        if len(fields) < 3 or fields[1] not in ("0", "1"):
            raise AfreqError(f"{labels}:{number}: expected '<index> <0|1> <image> ...', "
                             f"got '{line.strip()}'")
        image = split_dir / fields[2]
        if not image.is_file():
            raise AfreqError(f"{labels}:{number} lists {image}, which does not exist")
        if fields[1] == "0":
            samples.append(Sample(image, 0, "good"))
            continue
        named = fields[4] if len(fields) > 4 and fields[4] != "0" else f"{image.stem}_label.PNG"
        mask = split_dir / "Label" / named
        if not mask.is_file():
            raise AfreqError(f"{labels}:{number}: defective image {image.name} has no label image "
                             f"{mask}")
        samples.append(Sample(image, 1, "defect", mask))
    if not samples:
        raise AfreqError(f"{labels} lists no images")
    return samples


def has_dagm_layout(folder: Path) -> bool:
    return all((folder / split / "Label" / "Labels.txt").is_file() for split in ("Train", "Test"))


@register_dataset("dagm")
class DAGMSource(DatasetSource):
    """DAGM 2007, ten classes named class1 … class10 (folders Class1 … Class10), then any other
    folder of the root in the same layout, under its own name."""

    expected = "Class1/, Class2/, ... (each with Train/ and Test/)"

    def categories(self) -> list[str]:
        root = self.root()
        extra = sorted(p.name for p in root.iterdir()
                       if p.name.lower() not in CLASSES and has_dagm_layout(p)
                       ) if root.is_dir() else []
        return [*CLASSES, *extra]

    def folder(self, category: str) -> Path:
        return self.root() / (category.capitalize() if category in CLASSES else category)

    def present(self) -> list[str]:
        return [c for c in self.categories() if self.folder(c).is_dir()]

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        folder = self.folder(category)
        if not folder.is_dir():
            raise self.not_found()
        train = [s for s in read_labels(folder / "Train") if s.label == 0]
        if not train:
            raise AfreqError(f"{folder / 'Train'} has no defect-free images to train on")
        return train, read_labels(folder / "Test")
