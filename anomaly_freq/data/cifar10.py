"""CIFAR-10 one-class protocols from the standard python batch files.

``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` are read with an unpickler
that only admits plain containers and NumPy arrays, then written once as PNGs to the cache so the
rest of the pipeline reads files as for every other dataset.

- S1 (OCGAN protocol 2): the named class is normal; train on its training images, test on the
  whole test set.
- S2 (Skip-GANomaly leave-one-out): the named class is the anomaly; train on the other nine
  classes' training images; test on their test images (normal) and on every image of the named
  class, training and test (anomalous).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.data.sources import DatasetSource, cache_dir
from anomaly_freq.data.staging import build_once
from anomaly_freq.errors import AfreqError
from anomaly_freq.registry import register_dataset

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N×32×32×3 uint8, labels N) from one CIFAR-10 python batch file."""
    try:
        with path.open("rb") as handle:
            batch = _SafeUnpickler(io.BufferedReader(handle), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError,
            AttributeError) as err:
        raise AfreqError(f"{path} is not a CIFAR-10 python batch file ({err}); expected a "
                         "pickled dict with b'data' (N×3072 uint8) and b'labels'") from err
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise AfreqError(f"{path}: data has shape {data.shape} and {len(labels)} labels; "
                         "expected N×3072 and N labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def export_pngs(batches: Path, out: Path) -> Path:
    """Write every image once to ``out/<split>/<class>/<index>.png`` (atomic as a whole)."""

    def build(staging: Path) -> None:
        for split, names in BATCHES.items():
            index = 0
            for name in names:
                images, labels = read_batch(batches / name)
                for image, label in zip(images, labels, strict=True):
                    folder = staging / split / CLASSES[label]
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(folder / f"{index:05d}.png")
                    index += 1

    return build_once(out, build)


def _files(root: Path, split: str, cls: str) -> list[Path]:
    return sorted((root / split / cls).glob("*.png"))


@register_dataset("cifar10")
class CIFAR10Source(DatasetSource):
    expected = "cifar-10-batches-py/ (the python version)"

    def categories(self) -> list[str]:
        return list(CLASSES)

    def batches(self) -> Path | None:
        root = self.root()
        return next((p for p in (root / "cifar-10-batches-py", root)
                     if (p / "test_batch").is_file()), None)

    def present(self) -> list[str]:
        return self.categories() if self.batches() else []

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        batches = self.batches()
        if batches is None:
            raise self.not_found()
        stat = (batches / "test_batch").stat()
        key = hashlib.sha1(f"{batches.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        pngs = export_pngs(batches, cache_dir() / f"cifar10-png-{key.hexdigest()[:12]}")
        protocol = self.cfg.dataset.protocol
        others = [c for c in CLASSES if c != category]
        if protocol == "s1":
            train = [Sample(p, 0, "good") for p in _files(pngs, "train", category)]
            test = [Sample(p, int(c != category), "good" if c == category else c)
                    for c in CLASSES for p in _files(pngs, "test", c)]
        elif protocol == "s2":
            train = [Sample(p, 0, "good") for c in others for p in _files(pngs, "train", c)]
            test = [Sample(p, 0, "good") for c in others for p in _files(pngs, "test", c)]
            test += [Sample(p, 1, category) for s in ("train", "test")
                     for p in _files(pngs, s, category)]
        else:
            raise AfreqError(f"dataset.protocol={protocol} is unknown; use s1 or s2")
        return train, test
