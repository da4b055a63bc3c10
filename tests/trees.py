"""Miniature datasets written in the exact on-disk layouts of MVTec AD and raw VisA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _image(rng: np.random.Generator, size: int, defect: bool) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((size, size, 3), 120, np.uint8) + rng.integers(0, 20, (size, size, 3),
                                                                     dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    if defect:
        y, x = rng.integers(size // 4, 3 * size // 4, 2)
        mask[y - 4:y + 4, x - 4:x + 4] = 1
        image[mask.astype(bool)] = 250
    return image, mask


def write_mvtec(root: Path, categories=("bottle", "grid"), size: int = 48, n_train: int = 8,
                n_good: int = 4, defects=("broken", "crack"), n_defect: int = 3) -> Path:
    """MVTec AD layout; grid is written as greyscale like the real one, masks 0/255 `_mask.png`."""
    rng = np.random.default_rng(0)
    for cat in categories:
        grey = cat == "grid"

        def save(path: Path, array: np.ndarray, grey: bool = grey) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array[..., 0] if grey and array.ndim == 3 else array).save(path)

        for i in range(n_train):
            save(root / cat / "train" / "good" / f"{i:03d}.png", _image(rng, size, False)[0])
        for i in range(n_good):
            save(root / cat / "test" / "good" / f"{i:03d}.png", _image(rng, size, False)[0])
        for defect in defects:
            for i in range(n_defect):
                image, mask = _image(rng, size, True)
                save(root / cat / "test" / defect / f"{i:03d}.png", image)
                save(root / cat / "ground_truth" / defect / f"{i:03d}_mask.png", mask * 255)
    return root


def write_raw_visa(root: Path, objects=("candle", "pcb1"), size: int = 48, n_train: int = 8,
                   n_good: int = 4, n_bad: int = 4) -> Path:
    """Raw VisA archive layout with split_csv/1cls.csv and non-binary mask values (1, 2, 7)."""
    rng = np.random.default_rng(1)
    rows = ["object,split,label,image,mask"]
    for obj in objects:
        images = root / obj / "Data" / "Images"
        for split, count in (("train", n_train), ("test", n_good)):
            for _ in range(count):
                name = f"{len(rows):04d}.JPG"
                path = images / "Normal" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_image(rng, size, False)[0]).save(path, format="JPEG")
                rows.append(f"{obj},{split},normal,{obj}/Data/Images/Normal/{name},")
        for i in range(n_bad):
            image, mask = _image(rng, size, True)
            path = images / "Anomaly" / f"{i:03d}.JPG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, format="JPEG")
            mask_path = root / obj / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask * rng.choice([1, 2, 7])).astype(np.uint8)).save(mask_path)
            rows.append(f"{obj},test,anomaly,{obj}/Data/Images/Anomaly/{i:03d}.JPG,"
                        f"{obj}/Data/Masks/Anomaly/{i:03d}.png")
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root
