"""A run's decision threshold and heatmap colour range, taken from normal images only.

``eval.calibration=holdout`` keeps a seeded share of the training images
(``eval.calibration_fraction``, at least one) out of training and scores them once training is
done; ``train`` scores the training images themselves, in-sample (the paper presets train on
every image as the papers did, and a few-shot run has none to spare). Both values are raw, before
any ``eval.normalisation``, so that `afreq predict` can apply them to new images.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig

from anomaly_freq.data import Sample
from anomaly_freq.errors import AfreqError
from anomaly_freq.metrics import Evaluator
from anomaly_freq.viz.report import map_percentiles

MODES = ("holdout", "train")
THRESHOLD_PERCENTILE = 99.0
MAP_RANGE_PERCENTILES = (50.0, 99.9)


@dataclass(frozen=True)
class CalibrationSplit:
    """The images a run trains on and the normal images that calibrate it."""

    train: list[Sample]
    calibration: list[Sample]
    mode: str
    how: str


def split_training_images(cfg: DictConfig, train: list[Sample]) -> CalibrationSplit:
    """Hold out the calibration images (``holdout``) or calibrate on ``train`` itself."""
    mode, fraction = cfg.eval.calibration, cfg.eval.calibration_fraction
    if mode not in MODES:
        raise AfreqError(f"eval.calibration={mode} is unknown; use holdout (score held-out "
                         "training images) or train (score the training images, in-sample)")
    if mode == "train":
        return CalibrationSplit(train, train, "train", "eval.calibration=train: the training "
                                "images themselves, scored after training (in-sample)")
    if cfg.dataset.shots:
        return CalibrationSplit(train, train, "train", f"dataset.shots={cfg.dataset.shots}: "
                                "a few-shot run has no image to hold out, so the training "
                                "images themselves, scored after training (in-sample)")
    if not 0 < fraction < 1:
        raise AfreqError(f"eval.calibration_fraction={fraction} must lie between 0 and 1 "
                         "(e.g. 0.1 holds out a tenth of the training images)")
    if len(train) < 2:
        raise AfreqError(f"the category has {len(train)} training image(s) and "
                         "eval.calibration=holdout needs at least 2; set eval.calibration=train")
    count = min(len(train) - 1, max(1, round(fraction * len(train))))
    ordered = sorted(str(s.path) for s in train)
    held = set(random.Random(cfg.seed).sample(ordered, count))
    return CalibrationSplit(
        [s for s in train if str(s.path) not in held],
        [s for s in train if str(s.path) in held], "holdout",
        f"{count} of the {len(train)} training images, drawn with seed {cfg.seed} "
        f"(eval.calibration_fraction={fraction}), held out of training and scored after it")


def calibrate(split: CalibrationSplit, scored: Evaluator) -> dict[str, Any]:
    """The threshold and map range from the calibration images as ``scored``, with the rules
    that chose them and each image's score."""
    scores = np.array([row["pred_score"] for row in scored.rows])
    low, high = map_percentiles(scored.maps, MAP_RANGE_PERCENTILES)
    return {
        "mode": split.mode,
        "how": split.how,
        "in_sample": split.mode == "train",
        "n_images": len(scores),
        "threshold": float(np.percentile(scores, THRESHOLD_PERCENTILE)),
        "threshold_rule": f"{THRESHOLD_PERCENTILE:g}th percentile of the calibration images' "
                          "raw image scores (pred_score)",
        "map_range": [low, high],
        "map_range_rule": f"{MAP_RANGE_PERCENTILES[0]:g}th to {MAP_RANGE_PERCENTILES[1]:g}th "
                          "percentile of the calibration images' raw anomaly-map values",
        "images": [{"path": row["path"], "pred_score": row["pred_score"]}
                   for row in scored.rows],
    }


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its per-image list, for protocol.json and the checkpoint."""
    return {key: value for key, value in record.items() if key != "images"}
