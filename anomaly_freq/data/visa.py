"""VisA: the raw archive layout is converted once into the MVTec layout under ``visa_pytorch/``.

Raw: ``<root>/<obj>/Data/Images/{Normal,Anomaly}/*.JPG``, ``<root>/<obj>/Data/Masks/Anomaly/*.png``
and ``<root>/split_csv/1cls.csv`` (columns object, split, label, image, mask). Converted:
``<root>/visa_pytorch/<obj>/{train/good, test/good, test/bad, ground_truth/bad/<stem>.png}`` with
masks binarised ``!= 0`` to 0/255. Each object is converted in a staging folder and renamed into
place, so an interrupted conversion is redone rather than half-used.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from anomaly_freq.data.images import open_image
from anomaly_freq.data.mvtec_layout import Sample, has_layout, layout_folders, read_category
from anomaly_freq.data.progress import track
from anomaly_freq.data.sources import DatasetSource, refuse_without_layout
from anomaly_freq.data.staging import MARKER, build_once
from anomaly_freq.errors import AfreqError
from anomaly_freq.registry import register_dataset

OBJECTS = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
           "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum")
GROUPS = {
    **dict.fromkeys(("pcb1", "pcb2", "pcb3", "pcb4"), "complex_structure"),
    **dict.fromkeys(("candle", "capsules", "macaroni1", "macaroni2"), "multiple_instances"),
    **dict.fromkeys(("cashew", "chewinggum", "fryum", "pipe_fryum"), "single_instance"),
}
SPLIT_CSV = Path("split_csv") / "1cls.csv"


def candidates(root: Path, obj: str) -> tuple[Path, ...]:
    """Where the MVTec-layout folder of ``obj`` may be: our conversion, or a tree that came
    converted (``1cls/<obj>`` or ``<obj>``)."""
    return root / "visa_pytorch" / obj, root / "1cls" / obj, root / obj


def converted_dir(root: Path, obj: str) -> Path | None:
    """The first of `candidates` in the layout (our conversion only once finished)."""
    for candidate in candidates(root, obj):
        if has_layout(candidate) and (
            candidate.parent.name != "visa_pytorch" or (candidate / MARKER).exists()
        ):
            return candidate
    return None


def is_present(root: Path, obj: str) -> bool:
    return converted_dir(root, obj) is not None or (root / obj / "Data").is_dir()


def extra_objects(root: Path) -> list[str]:
    """Folders in the MVTec layout beside the official objects (a user's own categories)."""
    found = {name for parent in (root / "visa_pytorch", root / "1cls", root)
             for name in layout_folders(parent) if converted_dir(root, name)}
    return sorted(found - set(OBJECTS))


def category_dir(root: Path, obj: str) -> Path | None:
    """The MVTec-layout folder of ``obj``, converting the raw layout first if needed."""
    folder = converted_dir(root, obj)
    if folder is None and (root / obj / "Data").is_dir():
        return convert_object(root, obj)
    return folder


def read_split(root: Path) -> list[dict[str, str]]:
    path = root / SPLIT_CSV
    if not path.is_file():
        raise AfreqError(f"VisA split file {path} is missing: the raw VisA archive ships it; "
                         "re-extract it or run `afreq data download visa`")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    needed = {"object", "split", "label", "image", "mask"}
    if not rows or not needed <= rows[0].keys():
        raise AfreqError(f"{path} must have the columns {', '.join(sorted(needed))}")
    return rows


def convert_object(root: Path, obj: str) -> Path:
    """Convert one object of the raw tree; idempotent (skips a finished conversion)."""
    target = root / "visa_pytorch" / obj
    if (target / MARKER).exists():
        return target
    rows = [r for r in read_split(root) if r["object"] == obj]
    if not rows:
        raise AfreqError(f"{root / SPLIT_CSV} lists no images of '{obj}'")

    def build(staging: Path) -> None:
        for row in track(rows, f"converting VisA {obj}"):
            _convert_row(root, staging, row)

    return build_once(target, build, "converted from split_csv/1cls.csv")


def _convert_row(root: Path, out: Path, row: dict[str, str]) -> None:
    source = root / row["image"]
    if not source.is_file():
        raise AfreqError(f"{root / SPLIT_CSV} lists {source}, which does not exist")
    kind = "good" if row["label"] == "normal" else "bad"
    folder = out / row["split"] / kind
    folder.mkdir(parents=True, exist_ok=True)
    _link_or_copy(source, folder / source.name)
    if kind == "bad" and row["split"] == "test":
        mask_path = root / row["mask"]
        if not row["mask"] or not mask_path.is_file():
            raise AfreqError(f"anomalous VisA image {source} has no mask file ({mask_path})")
        binary = (np.asarray(open_image(mask_path).convert("L")) != 0).astype(np.uint8) * 255
        gt = out / "ground_truth" / "bad"
        gt.mkdir(parents=True, exist_ok=True)
        Image.fromarray(binary).save(gt / f"{source.stem}.png")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@register_dataset("visa")
class VisASource(DatasetSource):
    """VisA with the 1cls split (raw archive converted once, or an already-converted tree); other
    folders in the converted layout are categories too."""

    expected = ("candle/Data/..., split_csv/1cls.csv (raw) or visa_pytorch/<object>/ "
                "(converted)")

    def categories(self) -> list[str]:
        return [*OBJECTS, *extra_objects(self.root())]

    def present(self) -> list[str]:
        return [c for c in self.categories() if is_present(self.root(), c)]

    def group(self, category: str) -> str:
        return GROUPS.get(category, "")

    def check_category(self, category: str) -> None:
        root = self.root()
        refuse_without_layout(self, category, *candidates(root, category))
        super().check_category(category)

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        root = self.root()
        folder = category_dir(root, category) if root.is_dir() else None
        if folder is None:
            raise self.not_found()
        return read_category(folder)
