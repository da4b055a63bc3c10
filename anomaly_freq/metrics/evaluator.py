"""The evaluator: collects a category's predictions batch by batch and scores them.

It never knows which method produced a map. Maps are kept as float32 (never float16: exact
AUPRO and pixel AUROC depend on ties) at the evaluation resolution: a square side (maps
bilinear, masks nearest), or ``original``: each map resized back to its mask file's size, or
to its image's size for normal images. Masks are kept as bool. Options that use test-set
statistics are explicit and reported by `protocol()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from anomaly_freq.contract import check_outputs
from anomaly_freq.data.images import binarise, check_mask_rule, image_size
from anomaly_freq.errors import AfreqError
from anomaly_freq.metrics import functional as fn
from anomaly_freq.metrics.normalisation import dfd_code_slip, minmax, minmax_parts_summed
from anomaly_freq.metrics.pro import DEFAULT_STEPS, aupro, check_variant

# minmax: per part over the test set, then summed (the papers' intent); dfd_code: image scores as
# minmax, pixel maps as DFD's code computes them, broadcasting slip included (dfd.md §10)
NORMALISATIONS = ("none", "minmax", "dfd_code")


class Evaluator:
    """Streams ``(batch, outputs)`` pairs in; `compute` gives the category's metrics."""

    def __init__(self, resolution: int | str = 256, pro_variant: str = "exact",
                 normalisation: str = "none", pro_limit: float = 0.3,
                 mask_rule: str = "nearest") -> None:
        if resolution != "original" and not (isinstance(resolution, int) and resolution > 0):
            raise AfreqError(f"eval.resolution={resolution} must be a positive size or original")
        if normalisation not in NORMALISATIONS:
            raise AfreqError(f"eval.normalisation={normalisation} is unknown; valid: "
                             f"{', '.join(NORMALISATIONS)}")
        check_variant(pro_variant)
        if not 0 < pro_limit <= 1:
            raise AfreqError(f"PRO integration limit {pro_limit} must be in (0, 1]")
        self.resolution, self.pro_variant = resolution, pro_variant
        self.normalisation, self.pro_limit = normalisation, pro_limit
        self.mask_rule = check_mask_rule(mask_rule)
        self.rows: list[dict[str, Any]] = []  # per image: path, category, defect, label, score
        self.maps: list[np.ndarray] = []  # float32 H×W at the evaluation resolution
        self.masks: list[np.ndarray] = []  # bool H×W, same sizes
        self.pro_masks: list[np.ndarray] = []  # PRO's own masks, where the mask rule has them
        self.parts: list[np.ndarray] = []  # per-image K×H×W map parts, when a method gives them
        self.score_parts: list[np.ndarray] = []
        self.indices: list[int] = []  # each image's position in the test set
        self.has_masks = True

    def update(self, batch: dict[str, Any], outputs: dict[str, torch.Tensor]) -> None:
        """Add one predicted batch (the design's batch dict and the method's outputs)."""
        amap = outputs["anomaly_map"].detach().float().cpu()
        scores = outputs["pred_score"].detach().float().cpu()
        parts = outputs.get("map_parts")
        for i in range(amap.shape[0]):
            path = batch["path"][i]
            if not (torch.isfinite(amap[i]).all() and torch.isfinite(scores[i])):
                raise AfreqError(f"the anomaly map or score of {path} contains NaN or infinite "
                                 "values; the method's output is broken")
            label = int(batch["label"][i])
            mask_path = batch["mask_path"][i]
            self.has_masks &= bool(mask_path) or label == 0
            mask, pro_mask = self._masks(batch, i, mask_path)
            self.maps.append(_resize(amap[i], mask.shape)[0])
            self.masks.append(mask)
            if self.mask_rule == "fair_code":
                self.pro_masks.append(pro_mask)
            if parts is not None:
                self.parts.append(_resize(parts[i].detach().float().cpu(), mask.shape))
                self.score_parts.append(outputs["score_parts"][i].detach().float().cpu().numpy())
            self.rows.append({
                "path": path, "category": batch["category"][i], "defect": batch["defect"][i],
                "label": label, "pred_score": float(scores[i]),
            })
            self.indices.append(int(batch["index"][i]) if "index" in batch
                                else len(self.indices))

    def gather(self) -> bool:
        """Under DDP, merge every rank's share of the test set into rank 0's evaluator; True
        on the rank that then holds the whole set (always, on one process).

        The shares are put back in test-set order and an image that reached two ranks (the
        padding of uneven shares) counts once, so the metrics equal one device's.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return True
        fields = ("rows", "maps", "masks", "pro_masks", "parts", "score_parts", "indices")
        lead = dist.get_rank() == 0
        shards: list[Any] | None = [None] * dist.get_world_size() if lead else None
        dist.gather_object(({f: getattr(self, f) for f in fields}, self.has_masks), shards, dst=0)
        if not lead:
            return False
        seen: dict[int, tuple[dict[str, list], int]] = {}
        for state, _ in shards:
            for position, index in enumerate(state["indices"]):
                seen.setdefault(index, (state, position))
        order = sorted(seen)
        for f in fields:
            if not any(state[f] for state, _ in shards):  # no map parts from this method
                continue
            setattr(self, f, [seen[i][0][f][seen[i][1]] for i in order])
        self.has_masks = all(has for _, has in shards)
        return True

    def _masks(self, batch: dict[str, Any], i: int,
               mask_path: str) -> tuple[np.ndarray, np.ndarray]:
        """(pixel-metric mask, PRO mask) of image ``i`` at the evaluation resolution."""
        if self.resolution != "original":
            size = (self.resolution, self.resolution)
            planes = [batch[key][i : i + 1].float().cpu()
                      for key in ("mask", "pro_mask") if key in batch]
            pixel, *pro = [F.interpolate(p, size=size, mode="nearest")[0, 0].numpy() > 0.5
                           for p in planes]
            return pixel, pro[0] if pro else pixel
        if mask_path:
            return binarise(np.asarray(Image.open(mask_path).convert("L")), self.mask_rule)
        width, height = image_size(Path(batch["path"][i]))
        empty = np.zeros((height, width), dtype=bool)
        return empty, empty

    def scores(self) -> np.ndarray:
        """Image scores as scored: raw, or min-max scaled over the test set (per part, summed)."""
        if self.normalisation != "none" and self.score_parts:
            return minmax(np.stack(self.score_parts)).sum(1)
        values = np.array([r["pred_score"] for r in self.rows])
        return values if self.normalisation == "none" else minmax(values)

    def final_maps(self) -> list[np.ndarray]:
        """Maps as scored: raw, or min-max scaled over all test maps (per part, summed)."""
        if self.normalisation == "none":
            return self.maps
        parts = self.parts or [m[None] for m in self.maps]
        if self.normalisation == "dfd_code":
            return dfd_code_slip(parts)
        return minmax_parts_summed(parts)

    def compute(self, pixel: bool = True) -> dict[str, float]:
        """Image metrics, and pixel metrics when every anomalous test image has a mask (and
        ``pixel`` is true)."""
        if not self.rows:
            raise AfreqError("the evaluator received no predictions")
        labels = np.array([r["label"] for r in self.rows])
        image = fn.binary_metrics(self.scores(), labels)
        metrics = {f"image_{name}": value for name, value in image.items()}
        if pixel and self.has_masks and any(m.any() for m in self.masks):
            maps = self.final_maps()
            pixel = fn.binary_metrics(np.concatenate([m.ravel() for m in maps]),
                                      np.concatenate([m.ravel() for m in self.masks]))
            metrics.update({f"pixel_{name}": value for name, value in pixel.items()})
            metrics["pixel_aupro"] = aupro(maps, self.pro_masks or self.masks, self.pro_limit,
                                           self.pro_variant)
        return metrics

    def protocol(self) -> dict[str, Any]:
        """Exactly how `compute` scored, for protocol.json."""
        return {
            "eval_resolution": self.resolution,
            "map_resize": "bilinear, masks nearest" if self.resolution != "original"
            else "bilinear to each mask file's size (image size for normal images)",
            "mask_rule": self.mask_rule + ": " + {
                "nearest": "binarised != 0, nearest resize; one mask for every metric",
                "fair_code": "FAIR's code: cv2 bilinear resize; pixel metrics on pixels equal "
                             "to 255, PRO on every non-zero pixel",
                "dfd_code": "DFD's code: cv2 bilinear resize, /255 > 0.5; one mask",
            }[self.mask_rule],
            "map_dtype": "float32",
            "pro_variant": self.pro_variant,
            "pro_thresholds": DEFAULT_STEPS.get(self.pro_variant, "all distinct scores"),
            "pro_integration_limit": self.pro_limit,
            "score_normalisation": self.normalisation,
            "score_normalisation_scope": {
                "none": "raw scores and maps",
                "minmax": "over the test set, image scores and maps (per part, then summed, "
                          "when given)",
                "dfd_code": "over the test set: image scores min-max per part, summed; maps "
                            "a_j·P − c_j per part j, averaged (DFD code's slip, dfd.md §10)",
            }[self.normalisation],
            "pixel_metrics": "pooled over all test pixels of the category" if self.has_masks
            else "none (no masks)",
        }


def _resize(amap: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """An H×W or K×H×W map as K×H×W (K = 1 for H×W), bilinearly resized to ``shape``."""
    if amap.ndim == 2:
        amap = amap[None]
    if tuple(amap.shape[-2:]) != tuple(shape):
        amap = F.interpolate(amap[None], size=shape, mode="bilinear", align_corners=False)[0]
    return amap.numpy()


def update_checked(evaluator: Evaluator, pl_module: pl.LightningModule,
                   batch: dict[str, Any], outputs: Any) -> None:
    """Add one predicted batch to ``evaluator`` once it meets the plugin contract."""
    check_outputs(outputs, batch, getattr(pl_module, "registry_name", type(pl_module).__name__))
    evaluator.update(batch, outputs)


class EvaluatorCallback(pl.Callback):
    """Feeds every predict batch, checked against the plugin contract, to the evaluator."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                             dataloader_idx=0) -> None:
        update_checked(self.evaluator, pl_module, batch, outputs)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        self.evaluator.gather()
