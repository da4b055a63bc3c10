"""Reader for the MVTec AD on-disk layout, shared by MVTec AD, VisA, the synthetic set and folders.

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
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def find_mask(gt_folder: Path, stem: str) -> Path | None:
    if not gt_folder.is_dir():
        return None
    by_name = {p.stem: p for p in list_images(gt_folder)}
    return by_name.get(f"{stem}_mask") or by_name.get(stem)


def has_layout(folder: Path, train_subdir: str = "train/good") -> bool:
    return (folder / train_subdir).is_dir() and (folder / "test").is_dir()


def require_layout(folder: Path, train_subdir: str = "train/good") -> None:
    """Raise naming the first part of the layout that ``folder`` lacks."""
    for part in (folder / train_subdir, folder / "test"):
        if not part.is_dir():
            raise AfreqError(f"{part} is missing: {folder} is not in the expected layout "
                             f"(<category>/{train_subdir}, <category>/test/<defect>)")


def layout_folders(parent: Path) -> list[str]:
    """Names of the folders in ``parent`` that are in the MVTec AD layout, sorted."""
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir()
                  if not p.name.startswith(".") and has_layout(p))


def read_category(
    root: Path, train_subdir: str = "train/good", masks: str = "required"
) -> tuple[list[Sample], list[Sample]]:
    """Return (train, test) samples of one category folder in the MVTec AD layout.

    ``masks``: "required" (every defect image needs one), or "optional" (either every defect
    image has a mask or none has; pixel metrics are then skipped).
    """
    require_layout(root, train_subdir)
    train_dir, test_dir = root / train_subdir, root / "test"
    train = [Sample(p, 0, "good") for p in list_images(train_dir)]
    if not train:
        raise AfreqError(f"{train_dir} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)}); "
                         "a method needs normal training images")
    test = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for image in list_images(defect_dir):
            if defect == "good":
                test.append(Sample(image, 0, defect))
                continue
            mask = find_mask(root / "ground_truth" / defect, image.stem)
            if mask is None and masks == "required":
                raise AfreqError(
                    f"no mask for defect image {image}: expected "
                    f"{root / 'ground_truth' / defect / (image.stem + '_mask.png')}"
                )
            test.append(Sample(image, 1, defect, mask))
    if not test:
        raise AfreqError(f"{test_dir} holds no test images")
    with_mask = [s.mask is not None for s in test if s.label]
    if any(with_mask) and not all(with_mask):
        missing = next(s.path for s in test if s.label and s.mask is None)
        raise AfreqError(f"some defect images have masks but {missing} has none: give every "
                         "defect image a mask under ground_truth/<defect>/, or none")
    return train, test
