"""Reader for the MVTec AD on-disk layout, shared by MVTec AD, the synthetic set and VisA.

``<category>/train/good/*``, ``<category>/test/<defect>/*`` and
``<category>/ground_truth/<defect>/<stem>_mask.<ext>`` (or ``<stem>.<ext>``, as converted VisA
has it). Masks are matched to images by stem, never by sort position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anomaly_freq.errors import AfreqError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One image on disk: label 0 normal / 1 anomalous, its defect type and mask (if any)."""

    path: Path
    label: int
    defect: str
    mask: Path | None = None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def find_mask(gt_folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}_mask", stem):
        for ext in IMAGE_EXTENSIONS:
            for candidate in (gt_folder / f"{name}{ext}", gt_folder / f"{name}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def read_category(root: Path, require_masks: bool = True) -> tuple[list[Sample], list[Sample]]:
    """Return (train, test) samples of one category folder in the MVTec AD layout."""
    train_dir, test_dir = root / "train" / "good", root / "test"
    for folder in (train_dir, test_dir):
        if not folder.is_dir():
            raise AfreqError(f"{folder} is missing: {root} is not in the MVTec AD layout "
                             "(<category>/train/good, <category>/test/<defect>)")
    train = [Sample(p, 0, "good") for p in list_images(train_dir)]
    if not train:
        raise AfreqError(f"{train_dir} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    test = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for image in list_images(defect_dir):
            if defect == "good":
                test.append(Sample(image, 0, defect))
                continue
            mask = find_mask(root / "ground_truth" / defect, image.stem)
            if mask is None and require_masks:
                raise AfreqError(
                    f"no mask for defect image {image}: expected "
                    f"{root / 'ground_truth' / defect / (image.stem + '_mask.png')}"
                )
            test.append(Sample(image, 1, defect, mask))
    if not test:
        raise AfreqError(f"{test_dir} holds no test images")
    return train, test
