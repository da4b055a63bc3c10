"""The evaluator: collects a category's predictions batch by batch and scores them.

It never knows which method produced a map. Maps are kept as float32 at the evaluation
resolution (a square side, or ``original``: each map resized back to its mask's file size);
masks as bool. Options that use test-set statistics are explicit and reported by `protocol()`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from anomaly_freq.data.images import image_size
from anomaly_freq.errors import AfreqError
from anomaly_freq.methods.base import check_outputs
from anomaly_freq.metrics import functional as fn
from anomaly_freq.metrics.pro import aupro

NORMALISATIONS = ("none", "minmax")


class Evaluator:
    def __init__(self, resolution: int | str = 256, pro_variant: str = "exact",
                 normalisation: str = "none", pro_limit: float = 0.3) -> None:
        if resolution != "original" and not (isinstance(resolution, int) and resolution > 0):
            raise AfreqError(f"eval.resolution={resolution} must be a positive size or original")
        if normalisation not in NORMALISATIONS:
            raise AfreqError(f"eval.normalisation={normalisation} is unknown; valid: "
                             f"{', '.join(NORMALISATIONS)}")
        self.resolution, self.pro_variant = resolution, pro_variant
        self.normalisation, self.pro_limit = normalisation, pro_limit
        self.rows: list[dict[str, Any]] = []
        self.maps: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.parts: list[np.ndarray] = []  # per-image K×H×W map parts, when a method gives them
        self.score_parts: list[np.ndarray] = []
        self.has_masks = True

    def update(self, batch: dict[str, Any], outputs: dict[str, torch.Tensor]) -> None:
        amap = outputs["anomaly_map"].detach().float().cpu()
        parts = outputs.get("map_parts")
        for i in range(amap.shape[0]):
            label = int(batch["label"][i])
            mask_path = batch.get("mask_path", [""] * amap.shape[0])[i]
            self.has_masks &= bool(mask_path) or label == 0
            mask = self._mask(batch, i, mask_path)
            self.maps.append(_resize(amap[i], mask.shape))
            self.masks.append(mask)
            if parts is not None:
                self.parts.append(_resize(parts[i].detach().float().cpu(), mask.shape))
                self.score_parts.append(outputs["score_parts"][i].detach().float().cpu().numpy())
            self.rows.append({
                "path": batch["path"][i], "category": batch["category"][i],
                "defect": batch["defect"][i], "label": label,
                "pred_score": float(outputs["pred_score"][i]),
            })

    def _mask(self, batch: dict[str, Any], i: int, mask_path: str) -> np.ndarray:
        if self.resolution != "original":
            mask = batch["mask"][i : i + 1].float()
            size = (self.resolution, self.resolution)
            return F.interpolate(mask, size=size, mode="nearest")[0, 0].numpy() > 0.5
        if mask_path:
            return np.asarray(Image.open(mask_path).convert("L")) != 0
        width, height = image_size(Path(batch["path"][i]))
        return np.zeros((height, width), dtype=bool)

    def scores(self) -> np.ndarray:
        if self.normalisation == "minmax" and self.score_parts:
            return _minmax(np.stack(self.score_parts)).sum(1)
        values = np.array([r["pred_score"] for r in self.rows])
        return _minmax(values) if self.normalisation == "minmax" else values

    def final_maps(self) -> list[np.ndarray]:
        if self.normalisation != "minmax":
            return self.maps
        if self.parts:
            k = self.parts[0].shape[0]
            low = [min(p[j].min() for p in self.parts) for j in range(k)]
            high = [max(p[j].max() for p in self.parts) for j in range(k)]
            return [sum((p[j] - low[j]) / max(high[j] - low[j], 1e-12) for j in range(k))
                    for p in self.parts]
        low, high = min(m.min() for m in self.maps), max(m.max() for m in self.maps)
        return [(m - low) / max(high - low, 1e-12) for m in self.maps]

    def compute(self) -> dict[str, float]:
        if not self.rows:
            raise AfreqError("the evaluator received no predictions")
        labels = np.array([r["label"] for r in self.rows])
        scores = self.scores()
        metrics = {
            "image_auroc": fn.auroc(scores, labels),
            "image_ap": fn.average_precision(scores, labels),
            "image_f1max": fn.f1_max(scores, labels),
        }
        masks_any = any(m.any() for m in self.masks)
        if self.has_masks and masks_any:
            maps = self.final_maps()
            flat_maps = np.concatenate([m.ravel() for m in maps])
            flat_masks = np.concatenate([m.ravel() for m in self.masks])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metrics["pixel_auroc"] = fn.auroc(flat_maps, flat_masks)
            metrics["pixel_ap"] = fn.average_precision(flat_maps, flat_masks)
            metrics["pixel_f1max"] = fn.f1_max(flat_maps, flat_masks)
            metrics["pixel_aupro"] = aupro(maps, self.masks, self.pro_limit, self.pro_variant)
        return metrics

    def protocol(self) -> dict[str, Any]:
        return {
            "eval_resolution": self.resolution,
            "pro_variant": self.pro_variant,
            "pro_integration_limit": self.pro_limit,
            "score_normalisation": self.normalisation,
            "pixel_metrics": "pooled over all test pixels of the category" if self.has_masks
            else "none (no masks)",
        }


def _resize(amap: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    if amap.ndim == 2:
        amap = amap[None]
    if tuple(amap.shape[-2:]) != tuple(shape):
        amap = F.interpolate(amap[None], size=shape, mode="bilinear", align_corners=False)[0]
    out = amap.numpy()
    return out[0] if out.shape[0] == 1 else out


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = values.min(0), values.max(0)
    return (values - low) / np.maximum(high - low, 1e-12)


class EvaluatorCallback(pl.Callback):
    """Feeds every predict batch, checked against the plugin contract, to the evaluator."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                             dataloader_idx=0) -> None:
        name = getattr(pl_module, "registry_name", type(pl_module).__name__)
        check_outputs(outputs, batch, name)
        self.evaluator.update(batch, outputs)
