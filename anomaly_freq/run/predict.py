"""`afreq predict`: score new images with a saved checkpoint, call each normal or anomalous,
and draw its heatmap.

The verdict and the colours come from the run's calibration (`anomaly_freq.run.calibration`), stored
in the checkpoint: an image scoring above the threshold is anomalous, and every heatmap of every
call shares the stored colour range. A checkpoint saved before runs were calibrated gives scores
without verdicts, its heatmaps coloured from the lowest to the highest map value of the call.
A model written by `afreq export` (``.onnx``, or a TorchScript ``.pt``) predicts the same way,
its geometry and calibration read from the metadata JSON beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from anomaly_freq.data.images import decode_image
from anomaly_freq.data.mvtec_layout import IMAGE_EXTENSIONS
from anomaly_freq.errors import AfreqError
from anomaly_freq.files import write_csv, write_json
from anomaly_freq.run.checkpoint import read_checkpoint
from anomaly_freq.run.exported import is_exported, open_exported
from anomaly_freq.viz.report import add_colour_bar, draw_overlay, save_figure


def find_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise AfreqError(f"images folder {folder} does not exist")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise AfreqError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return found


@dataclass(frozen=True)
class Predictions:
    out_dir: Path
    paths: list[Path]
    scores: list[float]
    verdicts: list[str] | None  # normal / anomalous; None without a stored threshold
    calibration: dict[str, Any] | None
    scale: tuple[float, float]  # the heatmaps' colour range


@dataclass(frozen=True)
class Scorer:
    """A trained model as `afreq predict` needs it: its images' geometry, its calibration and
    images → (anomaly_map, pred_score)."""

    method: str
    image_size: int
    center_crop: int | None
    resize: str
    calibration: dict[str, Any] | None
    output_root: Path
    score: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def open_scorer(checkpoint: Path, expected_method: str | None = None) -> Scorer:
    """The run's model.pt through the checkpoint loader, or a file `afreq export` wrote."""
    if is_exported(checkpoint):
        return _exported_scorer(checkpoint, expected_method)
    loaded = read_checkpoint(checkpoint, expected_method)
    method, cfg = loaded.method, loaded.cfg
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method.to(device)

    def score(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = method.predict_step({"image": batch.to(device)}, 0)
        return out["anomaly_map"], out["pred_score"]

    resize = OmegaConf.select(cfg, "dataset.resize", default="pil")  # older checkpoints: pil
    return Scorer(cfg.method.name, cfg.dataset.image_size, cfg.dataset.center_crop, resize,
                  loaded.calibration, Path(cfg.output.root), score)


def _exported_scorer(path: Path, expected_method: str | None) -> Scorer:
    model = open_exported(path)
    meta = model.metadata
    if expected_method and expected_method not in (meta["method"], meta["preset"]):
        raise AfreqError(f"exported model {path} was trained with method '{meta['method']}' "
                         f"(preset '{meta['preset']}'), not '{expected_method}'")
    return Scorer(meta["method"], meta["image_size"], meta["center_crop"], meta["resize"],
                  meta["calibration"], Path("runs"), model)


@torch.no_grad()
def predict_folder(checkpoint: Path, images: Path, out_dir: Path | None = None,
                   expected_method: str | None = None, batch_size: int = 8) -> Predictions:
    """Score every image under ``images``; write scores.csv and heatmaps/ into ``out_dir``."""
    model = open_scorer(checkpoint, expected_method)
    calibration = model.calibration
    paths = find_images(images)
    out_dir = out_dir or model.output_root / "predict" / model.method / time.strftime(
        "%Y%m%d-%H%M%S")
    pictures, maps, scores = [], [], []
    for start in range(0, len(paths), batch_size):
        chunk = [decode_image(p, model.image_size, model.center_crop, model.resize)
                 for p in paths[start:start + batch_size]]
        batch = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float().div(255)
        amaps, batch_scores = model.score(batch)
        pictures += chunk
        maps += list(amaps[:, 0].float().cpu().numpy())
        scores += batch_scores.float().cpu().tolist()
    if calibration is None:
        scale = (float(min(m.min() for m in maps)), float(max(m.max() for m in maps)))
        verdicts = None
    else:
        scale = tuple(calibration["map_range"])
        verdicts = [verdict(score, calibration["threshold"]) for score in scores]
    (out_dir / "heatmaps").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (path, picture, amap) in enumerate(zip(paths, pictures, maps, strict=True)):
        name = "__".join(path.relative_to(images).parts)
        if path.suffix.lower() != ".png":  # x.jpg → x.jpg.png, so that it cannot overwrite x.png
            name += ".png"
        title = _title(path.name, scores[i], calibration, verdicts[i] if verdicts else None)
        save_figure(heatmap_figure(picture, amap, scale, title), out_dir / "heatmaps" / name)
        rows.append({"path": str(path), "pred_score": scores[i],
                     **({"prediction": verdicts[i]} if verdicts else {})})
    write_csv(out_dir / "scores.csv", rows)
    if calibration is not None:
        write_json(out_dir / "calibration.json", calibration)
    return Predictions(out_dir, paths, scores, verdicts, calibration, scale)


def verdict(score: float, threshold: float) -> str:
    return "anomalous" if score > threshold else "normal"


def _title(name: str, score: float, calibration: dict[str, Any] | None,
           called: str | None) -> str:
    if calibration is None:
        return f"{name}: score {score:.4g} (no stored threshold)"
    sign = ">" if called == "anomalous" else "≤"
    return f"{name}: score {score:.4g} {sign} threshold {calibration['threshold']:.4g}, {called}"


def heatmap_figure(picture: np.ndarray, amap: np.ndarray, scale: tuple[float, float],
                   title: str) -> Figure:
    """The image and its heatmap overlay side by side, the map coloured over ``scale``."""
    fig = Figure(figsize=(6.8, 3.4))
    left, right = fig.subplots(1, 2)
    left.imshow(picture)
    left.set_title("image")
    left.axis("off")
    add_colour_bar(fig, draw_overlay(right, picture, amap, scale), right)
    right.set_title("anomaly map")
    fig.suptitle(title)
    return fig


def describe(result: Predictions) -> list[str]:
    """What `afreq predict` prints: how images were called, one line per image, a summary."""
    low, high = result.scale
    if result.calibration is None:
        head = ("this checkpoint stores no threshold (it was saved before runs were calibrated):"
                f" scores only, heatmaps coloured on this call's own range {low:.4g} to "
                f"{high:.4g}")
    else:
        c = result.calibration
        head = (f"threshold {c['threshold']:.4g}, the {c['threshold_rule']}; calibration "
                f"images: {c['how']}. An image scoring above it is anomalous; every heatmap is "
                f"coloured from {low:.4g} to {high:.4g}")
    verdicts = result.verdicts or ["-"] * len(result.paths)
    lines = [head] + [f"{v:<9} {s:>11.4g}  {p}"
                      for v, s, p in zip(verdicts, result.scores, result.paths, strict=True)]
    if result.verdicts:
        lines.append(f"{result.verdicts.count('anomalous')} of {len(result.paths)} images "
                     "anomalous")
    return lines
