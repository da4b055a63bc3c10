"""Running a model written by `afreq export`: ONNX Runtime for ``.onnx`` files, ``torch.jit``
for TorchScript ``.pt`` files, each with the metadata JSON written beside it.

An exported graph takes float32 RGB images N×3×H×W in [0, 1] at the run's geometry (the
metadata's ``input``) and returns ``anomaly_map`` (N×1×H×W) and ``pred_score`` (N).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly_freq.errors import AfreqError

METADATA_FORMAT = 1
INPUT_NAME = "images"
OUTPUT_NAMES = ("anomaly_map", "pred_score")
INSTALL_HINT = "pip install 'anomaly_freq[export]' (onnx, onnxruntime, onnxscript)"

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def metadata_path(model: Path) -> Path:
    """The JSON beside an exported file: ``model.onnx`` → ``model.onnx.json``."""
    return model.with_name(model.name + ".json")


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive carries its code; a `torch.save` checkpoint does not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def is_exported(path: Path) -> bool:
    return path.suffix == ".onnx" or (path.suffix == ".pt" and is_torchscript(path))


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise AfreqError(f"ONNX models need the [export] extra: {INSTALL_HINT}") from err
    return onnxruntime


def onnx_runner(path: Path, threads: int | None = None) -> Runner:
    """An ONNX Runtime session on the CPU; ``threads``: intra-op threads (None: its default)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types
        raise AfreqError(f"{path} is not a model ONNX Runtime can load ({_one_line(err)})"
                         ) from err

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amap, score = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return amap, score

    return run


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates TorchScript
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as err:
            raise AfreqError(f"{path} is not a TorchScript model torch.jit can load "
                             f"({_one_line(err)})") from err


def torchscript_runner(path: Path) -> Runner:
    module = load_torchscript(path)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            amap, score = module(torch.from_numpy(images))
        return amap.numpy(), score.numpy()

    return run


def _one_line(err: BaseException) -> str:
    """The runtime's message on one line; TorchScript's ends with the raised error."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if isinstance(err, torch.jit.Error) and lines:
        return lines[-1]
    return " ".join(lines) or type(err).__name__


def read_metadata(path: Path) -> dict[str, Any]:
    meta = metadata_path(path)
    if not meta.is_file():
        raise AfreqError(f"{path} has no {meta.name} beside it (afreq export writes the two "
                         "together); copy it along or export the run again")
    try:
        metadata = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AfreqError(f"{meta} is not readable JSON ({err}); export the run again") from err
    found = metadata.get("export_format") if isinstance(metadata, dict) else None
    if found != METADATA_FORMAT:
        raise AfreqError(f"{meta} was written by another afreq version (export format {found}, "
                         f"this version reads {METADATA_FORMAT}); export the run again")
    return metadata


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    metadata: dict[str, Any]
    runner: Runner

    def expected_input(self) -> str:
        _, channels, height, width = self.metadata["input"]["shape"]
        return f"float32 RGB images N×{channels}×{height}×{width} in [0, 1]"

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anomaly_map, pred_score) of a batch; a batch the graph rejects is an AfreqError
        that gives the runtime's message and the shape the graph expects."""
        array = images.detach().cpu().numpy()
        try:
            amap, score = self.runner(array)
        except Exception as err:  # ONNX Runtime and TorchScript raise their own types
            raise AfreqError(f"{self.path} rejected images of shape {list(array.shape)} "
                             f"({array.dtype}): {_one_line(err)}; it expects "
                             f"{self.expected_input()}, decoded as its "
                             f"{metadata_path(self.path).name} says") from err
        return torch.from_numpy(np.asarray(amap)), torch.from_numpy(np.asarray(score))


def open_exported(path: Path, threads: int | None = None) -> ExportedModel:
    """An exported model and its metadata, ready to score batches."""
    if not path.is_file():
        raise AfreqError(f"exported model {path} does not exist")
    metadata = read_metadata(path)
    runner = onnx_runner(path, threads) if path.suffix == ".onnx" else torchscript_runner(path)
    return ExportedModel(path, metadata, runner)
