"""Test-set evaluation during training: the papers' best-epoch numbers, recorded apart.

DFD's code scores the test set after every 4-epoch meta-epoch and reports the evaluation with the
largest I-AUROC + P-AUROC + PRO; OCR-GAN's scores it every epoch and reports the best image
AUROC. Both choose the model on test data, so the benchmark's number stays the last epoch. This
callback writes the curve to ``test_curve.csv`` and returns the chosen evaluation's metrics with a
``best_on_test_`` prefix, so tables can show the papers' protocol beside ours. Random states are
restored after every evaluation: training is the same with or without the monitor.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from anomaly_freq.errors import AfreqError
from anomaly_freq.files import write_csv
from anomaly_freq.metrics.evaluator import Evaluator, update_checked

PREFIX = "best_on_test_"
METRICS = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max",
           "pixel_aupro")
log = logging.getLogger(__name__)


class BestOnTestMonitor(pl.Callback):
    """Score the test set after every ``every_n_epochs`` epochs and after the last one.

    The scoring is Lightning's validation loop over the test set, run by a Trainer made with
    ``check_val_every_n_epoch=every_n_epochs`` (the last epoch is added here). Lightning runs it
    after an epoch's last batch, before the epoch-end hooks, and draws the loader's seed before
    any validation hook: the random states are taken at the last batch's end.
    """

    def __init__(self, make_evaluator: Callable[[], Evaluator], every_n_epochs: int,
                 select_by: list[str], path: Path | None) -> None:
        if every_n_epochs < 1:
            raise AfreqError(f"eval.test_every_n_epochs={every_n_epochs} must be at least 1 "
                             "(0 turns the test-set monitor off)")
        unknown = [m for m in select_by if m not in METRICS]
        if not select_by or unknown:
            raise AfreqError(f"eval.best_on_test_by={list(select_by)} must name metrics from "
                             f"{', '.join(METRICS)}")
        self.make_evaluator = make_evaluator
        self.every, self.select_by, self.path = every_n_epochs, list(select_by), path
        self.pixel = any(m.startswith("pixel_") for m in self.select_by)
        self.curve: list[dict[str, float]] = []
        self.evaluator: Evaluator | None = None
        self.states: dict[str, Any] | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = trainer.current_epoch + 1 == trainer.max_epochs
        trainer.check_val_every_n_epoch = 1 if last else self.every

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.states = _random_states()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluator = self.make_evaluator()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        update_checked(self.evaluator, pl_module, batch, outputs)

    def on_validation_epoch_end(self, trainer: pl.Trainer,
                                pl_module: pl.LightningModule) -> None:
        if not self.evaluator.gather():  # a DDP rank other than 0: rank 0 scores the whole set
            return
        metrics = self.evaluator.compute(pixel=self.pixel)
        self.curve.append({"epoch": trainer.current_epoch + 1, **metrics})
        write_csv(self.path, self.curve)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluator = None
        if self.states is not None:  # None when validation ran mid-epoch
            _restore_random_states(self.states)

    def best(self) -> dict[str, float]:
        """The chosen evaluation's metrics, prefixed; empty when none ran or none can choose."""
        if not self.curve:
            return {}
        present = [m for m in self.select_by if m in self.curve[0]]
        missing = [m for m in self.select_by if m not in present]
        if not present:
            log.warning("no best_on_test_* recorded: this run gives none of %s",
                        ", ".join(missing))
            return {}
        if missing:  # pixel metrics on a dataset without masks
            log.warning("best evaluation on test chosen by %s only; this run gives no %s",
                        " + ".join(present), ", ".join(missing))

        def key(row: dict[str, float]) -> float:
            total = sum(row[m] for m in present)
            return -math.inf if math.isnan(total) else total

        # the first of equal evaluations, as a loop keeping the strictly better one would
        row = max(self.curve, key=key)
        return {f"{PREFIX}{name}": value for name, value in row.items()}


def _random_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
