"""Cache of decoded, resized images so that epochs after the first never decode a file again.

Keys combine the file path, its modification time and size, and the output geometry, so an
edited file or a new resolution is decoded afresh. ``memory`` keeps arrays in the process (fine
with ``num_workers=0``); ``disk`` stores ``.npy`` files that every worker process shares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from anomaly_freq.files import replacing


class DecodeCache:
    def __init__(self, mode: str, folder: Path | None = None) -> None:
        if mode not in ("memory", "disk", "none"):
            raise ValueError(f"cache mode must be memory, disk or none, got {mode!r}")
        self.mode, self.folder = mode, folder
        self._memory: dict[str, np.ndarray] = {}

    def get(self, path: Path, geometry: str, decode: Callable[[], np.ndarray]) -> np.ndarray:
        if self.mode == "none":
            return decode()
        stat = path.stat()
        key = hashlib.sha1(
            f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{geometry}".encode()
        ).hexdigest()
        if self.mode == "memory":
            if key not in self._memory:
                self._memory[key] = decode()
            return self._memory[key]
        file = self.folder / key[:2] / f"{key}.npy"
        try:
            return np.load(file)
        except (FileNotFoundError, ValueError, EOFError, OSError):
            array = decode()
            self._store(file, array)
            return array

    @staticmethod
    def _store(file: Path, array: np.ndarray) -> None:
        with replacing(file) as tmp, tmp.open("wb") as handle:
            np.save(handle, array)
