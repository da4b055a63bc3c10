"""Collect a method's predictions during the predict loop and score them.

The collector is a Lightning callback, so methods never see it: it takes each batch's outputs,
checks them against the contract, resizes maps and masks to the evaluation resolution and keeps
them (maps in float32, masks as bool) until `compute_metrics` scores the whole category.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from anomaly_freq.errors import AfreqError
from anomaly_freq.methods.base import check_outputs


class PredictionCollector(pl.Callback):
    def __init__(self, resolution: int) -> None:
        self.resolution = resolution
        self.rows: list[dict[str, Any]] = []
        self.maps: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        self.has_masks = True

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        check_outputs(outputs, batch, getattr(pl_module, "registry_name", type(pl_module).__name__))
        size = (self.resolution, self.resolution)
        amap = outputs["anomaly_map"].detach().float()
        self.maps.append(F.interpolate(amap, size=size, mode="bilinear").cpu())
        self.masks.append(F.interpolate(batch["mask"].float(), size=size, mode="nearest").cpu() > 0)
        pairs = zip(batch["mask_path"], batch["label"], strict=True)
        self.has_masks &= all(path or not label for path, label in pairs)
        for i, score in enumerate(outputs["pred_score"].detach().float().cpu().tolist()):
            self.rows.append({
                "path": batch["path"][i],
                "category": batch["category"][i],
                "defect": batch["defect"][i],
                "label": int(batch["label"][i]),
                "pred_score": score,
            })


def compute_metrics(collector: PredictionCollector) -> dict[str, float]:
    """Image AUROC on `pred_score` and pixel AUROC pooled over every test pixel."""
    labels = np.array([r["label"] for r in collector.rows])
    scores = np.array([r["pred_score"] for r in collector.rows])
    if len(np.unique(labels)) < 2:
        raise AfreqError(
            "the test set holds only one class; AUROC needs normal and anomalous images"
        )
    if not np.isfinite(scores).all():
        raise AfreqError("the method produced NaN or infinite image scores")
    maps = torch.cat(collector.maps).numpy().ravel()
    masks = torch.cat(collector.masks).numpy().ravel()
    if not np.isfinite(maps).all():
        raise AfreqError("the method produced NaN or infinite anomaly-map values")
    metrics = {"image_auroc": float(roc_auc_score(labels, scores))}
    if collector.has_masks and masks.any() and not masks.all():
        metrics["pixel_auroc"] = float(roc_auc_score(masks, maps))
    return metrics
