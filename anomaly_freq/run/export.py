"""`afreq export`: a trained model as one ONNX or TorchScript file, its metadata beside it.

The exported graph is the method's whole `predict_step`: float32 RGB images N×3×H×W in [0, 1],
decoded and resized as `anomaly_freq.data.images.decode_image` does for the run, in;
``anomaly_map`` (N×1×H×W) and ``pred_score`` (N) out. Normalisation, colour order and frequency
filters are inside the graph, and the batch size is free. ONNX goes through torch.export
(``torch.onnx.export(dynamo=True)``, FFTs as ONNX DFT nodes); TorchScript through
``torch.jit.trace``, behind a scripted check of the input's shape. Before a file is written,
the export is run on a batch of random images and compared with `predict_step`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from anomaly_freq import __version__
from anomaly_freq.errors import AfreqError
from anomaly_freq.files import replacing, write_json
from anomaly_freq.run.checkpoint import checkpoint_file, read_checkpoint
from anomaly_freq.run.exported import (
    INPUT_NAME,
    INSTALL_HINT,
    METADATA_FORMAT,
    OUTPUT_NAMES,
    metadata_path,
    onnx_runner,
    torchscript_runner,
)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
DEFAULT_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
#: the export must reproduce predict_step to these: maps absolutely (relative to the map's
#: magnitude above 1), scores relatively
MAP_TOLERANCE, SCORE_TOLERANCE = 1e-3, 1e-4
CHECK_BATCH = 3  # not the example's 2, so the check also proves the batch size is free
PROTOBUF_LIMIT = 2**31  # bytes in one ONNX file


class InferenceGraph(nn.Module):
    """Any method's `predict_step` as a module of images → (anomaly_map, pred_score)."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.method.predict_step({"image": images}, 0)
        return out["anomaly_map"], out["pred_score"]


class CheckedInput(nn.Module):
    """A traced graph behind a scripted check: float32 N×3×H×W at the traced H×W, or an error
    naming the shape (a trace would otherwise run other sizes and return nonsense)."""

    def __init__(self, traced: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.traced, self.height, self.width = traced, height, width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = images.shape
        if len(shape) != 4 or shape[1] != 3 or shape[2] != self.height or shape[3] != self.width:
            raise RuntimeError(f"expected images of shape N×3×{self.height}×{self.width}, "
                               f"got {shape}")
        if images.dtype != torch.float32:
            raise RuntimeError("expected float32 images in [0, 1]")
        return self.traced(images)


@dataclass(frozen=True)
class Export:
    path: Path
    metadata_path: Path
    metadata: dict[str, Any]


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise AfreqError(f"format=onnx needs the [export] extra: {INSTALL_HINT}") from err


def _random_images(n: int, side: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def write_onnx(graph: InferenceGraph, example: torch.Tensor, path: Path) -> str:
    """The graph through torch.export as ONNX with a free batch size; returns how."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on traced-away Python checks
        program = torch.onnx.export(
            graph, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.save(str(path), external_data=False)  # one file: weights inside
    opset = program.model.opset_imports[""]
    return f"torch.onnx.export (dynamo, torch {torch.__version__}), opset {opset}"


def write_torchscript(graph: InferenceGraph, example: torch.Tensor, path: Path) -> str:
    """The graph traced, behind `CheckedInput`; returns how."""
    method = graph.method
    # Lightning's own to_torchscript sets this: the module has no trainer, and tracing reads it
    method._jit_is_scripting = True
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer notes
            traced = torch.jit.trace(graph, (example,), check_trace=False)
            checked = torch.jit.script(CheckedInput(traced, *example.shape[-2:]))
            torch.jit.save(checked, str(path))
    finally:
        del method._jit_is_scripting
    return f"torch.jit.trace (torch {torch.__version__})"


def compare(native: tuple[torch.Tensor, torch.Tensor],
            exported: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Largest map difference and largest relative score difference of two outputs."""
    amap, score = native[0].numpy(), native[1].numpy()
    map_diff = float(np.abs(exported[0] - amap).max())
    score_diff = float((np.abs(exported[1] - score) / np.maximum(np.abs(score), 1e-12)).max())
    return {"max_map_difference": map_diff, "max_score_relative_difference": score_diff,
            "map_tolerance": MAP_TOLERANCE * max(1.0, float(np.abs(amap).max())),
            "score_tolerance": SCORE_TOLERANCE, "images": int(score.shape[0])}


def _output(checkpoint: Path, fmt: str, output: Path | None) -> tuple[Path, Path]:
    """(model.pt to read, file to write)."""
    if fmt not in FORMATS:
        raise AfreqError(f"format={fmt} is unknown; use format=onnx or format=torchscript")
    if fmt == "onnx":
        require_onnx()
    source = checkpoint_file(checkpoint)
    output = output or source.with_name(DEFAULT_NAMES[fmt])
    if output.suffix != FORMATS[fmt]:
        raise AfreqError(f"output={output}: a {fmt} export must end in {FORMATS[fmt]} "
                         "(afreq predict tells the formats apart by it)")
    return source, output


def _check_exportable(method: nn.Module, source: Path, fmt: str) -> None:
    reason = method.export_blocker()
    if reason:
        raise AfreqError(f"{source} cannot be exported to {fmt}: {reason}")
    weights = sum(t.numel() * t.element_size() for t in method.state_dict().values())
    if fmt == "onnx" and weights >= PROTOBUF_LIMIT:
        raise AfreqError(f"{source} holds {weights / 2**30:.1f} GiB of weights and one ONNX file "
                         "at most 2 GiB; use format=torchscript")


def _write_checked(graph: InferenceGraph, fmt: str, side: int, path: Path,
                   source: Path) -> tuple[str, dict[str, float]]:
    """Write the export to ``path`` and compare it with predict_step; (how, differences)."""
    check = _random_images(CHECK_BATCH, side, seed=1)
    with torch.no_grad():
        expected = graph(check)
    example = _random_images(2, side, seed=0)
    try:
        if fmt == "onnx":
            how, runner = write_onnx(graph, example, path), onnx_runner(path)
        else:
            how, runner = write_torchscript(graph, example, path), torchscript_runner(path)
    except AfreqError:
        raise
    except Exception as err:  # an op the exporter cannot take, in a plugin or a backbone
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AfreqError(f"{source} cannot be exported to {fmt}: {first}; nothing was "
                         "written") from err
    parity = compare(expected, runner(check.numpy()))
    if not (parity["max_map_difference"] <= parity["map_tolerance"]
            and parity["max_score_relative_difference"] <= SCORE_TOLERANCE):
        raise AfreqError(
            f"the {fmt} export of {source} does not reproduce its predict_step on random images "
            f"(maps differ by up to {parity['max_map_difference']:.3g}, scores by "
            f"{parity['max_score_relative_difference']:.3g} relative); nothing was written")
    return how, parity


def export_checkpoint(checkpoint: Path, fmt: str, output: Path | None = None) -> Export:
    """Export the model of ``checkpoint`` (a run folder or its model.pt) to ``fmt``; writes
    the file (default: beside model.pt) and its metadata JSON."""
    source, output = _output(checkpoint, fmt, output)
    loaded = read_checkpoint(source)
    cfg = loaded.cfg
    _check_exportable(loaded.method, source, fmt)
    size, crop = int(cfg.dataset.image_size), cfg.dataset.center_crop
    side = int(crop or size)
    with replacing(output) as tmp:
        how, parity = _write_checked(InferenceGraph(loaded.method).eval(), fmt, side, tmp,
                                     source)
    metadata = {
        "export_format": METADATA_FORMAT,
        "format": fmt,
        "exporter": how,
        "anomaly_freq": __version__,
        "source": str(source),
        "method": cfg.method.name,
        "preset": OmegaConf.select(cfg, "method.preset", default=cfg.method.name),
        "dataset": cfg.dataset.name,
        "category": cfg.dataset.category,
        "image_size": size,
        "center_crop": crop,
        "resize": OmegaConf.select(cfg, "dataset.resize", default="pil"),
        "input": {"name": INPUT_NAME, "shape": ["N", 3, side, side], "dtype": "float32",
                  "range": [0, 1], "channels": "RGB"},
        "outputs": {OUTPUT_NAMES[0]: ["N", 1, side, side], OUTPUT_NAMES[1]: ["N"]},
        "calibration": loaded.calibration,  # threshold and map range, None if never calibrated
        "parity": parity,
    }
    meta = metadata_path(output)
    write_json(meta, metadata)
    return Export(output, meta, metadata)
