"""File checks: the fast one before every run, and `afreq data check` over a whole dataset.

The fast check reads each file's header (format, width and height) and its last bytes: a PNG
ends with its IEND chunk, a JPEG with its end-of-image marker, an uncompressed file (BMP) is
as long as its header says. Only a file that fails this is decoded, to tell a truncated file
from one with trailing bytes. Masks must have their image's width and height.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig
from PIL import Image
from rich.table import Table

from anomaly_freq import registry
from anomaly_freq.data.images import READ_ERRORS, decode_image, decode_mask, open_image
from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.data.progress import track
from anomaly_freq.errors import AfreqError

END_MARKERS = {"PNG": b"IEND", "JPEG": b"\xff\xd9", "MPO": b"\xff\xd9"}
TAIL = 4096  # bytes searched for the end marker (JPEG files may carry a trailer after it)


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file that looks complete; raises naming it otherwise."""
    try:
        with Image.open(path) as image:
            complete = _looks_complete(path, image)
            size = image.size
    except READ_ERRORS as err:
        raise AfreqError(f"cannot read image {path} ({err}); replace or re-download it") from err
    if not complete:
        open_image(path)  # decode: raises naming the file unless it merely has trailing bytes
    return size


def _looks_complete(path: Path, image: Image.Image) -> bool:
    length = path.stat().st_size
    marker = END_MARKERS.get(image.format or "")
    if marker is not None:
        with path.open("rb") as handle:
            handle.seek(max(0, length - TAIL))
            return marker in handle.read()
    raw = [t for t in image.tile if t.codec_name == "raw" and len(t.args) > 1 and t.args[1] > 0]
    if raw:
        return length >= max(t.offset + t.args[1] * (t.extents[3] - t.extents[1]) for t in raw)
    return True


def check_files(samples: Sequence[Sample], show_progress: bool = True) -> None:
    """The fast check of every image and mask of ``samples``; raises on the first bad file."""
    for s in track(samples, "checking image files", show_progress):
        width, height = header_size(s.path)
        if s.mask is None:
            continue
        mask_width, mask_height = header_size(s.mask)
        if (mask_width, mask_height) != (width, height):
            raise AfreqError(f"mask {s.mask} is {mask_width}×{mask_height} but its image {s.path} "
                             f"is {width}×{height}; masks must match their image's size")


def check_dataset(cfg: DictConfig, deep: bool = False) -> tuple[Table, bool]:
    """A table with one row per category, and whether every category is usable."""
    source = registry.create_dataset(cfg.dataset.name, cfg)
    table = Table(title=f"{cfg.dataset.name} at {source.root()}")
    for column in ("category", "status", "train", "test good", "test defect", "masks"):
        table.add_column(column)
    all_ok = True
    for category in source.categories():
        try:
            train, test = source.samples(category)
            check_files([*train, *test])
            if deep:
                for s in [*train, *test]:
                    decode_image(s.path, 8)
                    if s.mask is not None:
                        decode_mask(s.mask, s.path, 8)
        except AfreqError as err:
            all_ok = False
            status = "missing" if "not found" in str(err) or "missing" in str(err) else "corrupt"
            table.add_row(category, f"[red]{status}[/]: {err}", "", "", "", "")
            continue
        defects = [s for s in test if s.label]
        table.add_row(category, "[green]ok[/]", str(len(train)), str(len(test) - len(defects)),
                      str(len(defects)), str(sum(s.mask is not None for s in defects)))
    return table, all_ok
