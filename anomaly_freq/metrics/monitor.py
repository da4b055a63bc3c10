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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from anomaly_freq.errors import AfreqError
from anomaly_freq.files import write_csv
from anomaly_freq.metrics.evaluator import Evaluator

PREFIX = "best_on_test_"
METRICS = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max",
           "pixel_aupro")
log = logging.getLogger(__name__)


class BestOnTestMonitor(pl.Callback):
    """Score the test set after every ``every_n_epochs`` epochs and after the last one.

    Lightning runs callbacks' epoch-end hooks before the method's own, where a method may finish
    its epoch (freqstat computes its statistics there), so an epoch is scored at the start of the
    next one, and the last at the end of training. The method's predict hooks run around each
    evaluation as `trainer.predict` runs them.
    """

    def __init__(self, make_evaluator: Callable[[], Evaluator], loader: Callable[[], Iterable],
                 every_n_epochs: int, select_by: list[str], path: Path | None) -> None:
        if every_n_epochs < 1:
            raise AfreqError(f"eval.test_every_n_epochs={every_n_epochs} must be at least 1 "
                             "(0 turns the test-set monitor off)")
        unknown = [m for m in select_by if m not in METRICS]
        if not select_by or unknown:
            raise AfreqError(f"eval.best_on_test_by={list(select_by)} must name metrics from "
                             f"{', '.join(METRICS)}")
        self.make_evaluator, self.make_loader = make_evaluator, loader
        self.loader: Iterable | None = None  # made once, so loader workers are reused
        self.every, self.select_by, self.path = every_n_epochs, list(select_by), path
        self.pixel = any(m.startswith("pixel_") for m in self.select_by)
        self.curve: list[dict[str, float]] = []
        self.epochs_done = 0
        self.evaluated = 0  # the last epoch scored (on every rank: the curve is rank 0's)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs_done += 1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epochs_done and self.epochs_done % self.every == 0:
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epochs_done and self.evaluated != self.epochs_done:
            self._evaluate(trainer, pl_module)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluated = self.epochs_done
        states = _random_states()
        was_training = pl_module.training
        pl_module.eval()
        try:
            pl_module.prepare_for_inference()
            pl_module.on_predict_start()
            evaluator = self.make_evaluator()
            if self.loader is None:
                self.loader = self.make_loader()
            with torch.no_grad(), trainer.strategy.precision_plugin.predict_step_context():
                for i, batch in enumerate(self.loader):
                    batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                    evaluator.update(batch, pl_module.predict_step(batch, i))
            metrics = evaluator.compute(pixel=self.pixel) if evaluator.gather() else None
        finally:
            pl_module.on_predict_end()
            pl_module.train(was_training)
            _restore_random_states(states)
        if metrics is None:  # a DDP rank other than 0: rank 0 scores the gathered set
            return
        self.curve.append({"epoch": self.epochs_done, **metrics})
        write_csv(self.path, self.curve)

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
