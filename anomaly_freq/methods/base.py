"""The plugin contract every method follows.

A method is a LightningModule that learns from batches of normal images and, in `predict_step`,
returns per image a raw `anomaly_map` (B×1×H×W, higher = more anomalous) and a raw `pred_score`
(B). It never computes metrics and never normalises with test-set statistics: the evaluator owns
both. Register it with ``@register_method("name")`` and give it defaults in
``configs/method/<name>.yaml`` (or a ``default_config`` dict for out-of-tree plugins).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

LearningType = Literal["one_class", "few_shot"]


class AnomalyModule(pl.LightningModule):
    """Base class of all methods; subclasses implement `training_step` and `predict_step`."""

    learning_type: ClassVar[LearningType] = "one_class"
    #: Trainer keyword arguments the method needs (they override the run configuration).
    trainer_arguments: ClassVar[dict[str, Any]] = {}
    #: Defaults for plugins that ship no YAML file; merged into the run configuration.
    default_config: ClassVar[dict[str, Any]] = {}
    registry_name: ClassVar[str]

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> dict[str, torch.Tensor]:
        """Return ``{"anomaly_map": B×1×H×W, "pred_score": B}`` for ``batch["image"]``."""
        raise NotImplementedError

    def test_step(self, batch: dict[str, Any], batch_idx: int = 0) -> dict[str, torch.Tensor]:
        return self.predict_step(batch, batch_idx)

    def prepare_for_inference(self) -> None:
        """Derive what scoring needs from training data (statistics, say). Called after
        training and, when the test-set monitor is on, before each of its evaluations."""

    def on_train_end(self) -> None:
        self.prepare_for_inference()


def check_outputs(outputs: Any, batch: dict[str, Any], method: str) -> None:
    """Raise a plain error when a method breaks the output contract (a plugin author's bug)."""
    if not isinstance(outputs, dict) or not {"anomaly_map", "pred_score"} <= outputs.keys():
        raise TypeError(f"method '{method}' predict_step must return anomaly_map and pred_score")
    amap, score = outputs["anomaly_map"], outputs["pred_score"]
    n, _, h, w = batch["image"].shape
    if amap.ndim != 4 or amap.shape[0] != n or amap.shape[1] != 1:
        raise TypeError(f"method '{method}' anomaly_map must be B×1×H×W, got {tuple(amap.shape)}")
    if score.shape != (n,):
        raise TypeError(
            f"method '{method}' pred_score must have shape ({n},), got {tuple(score.shape)}"
        )
