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
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from anomaly_freq.bench.rundir import write_csv
from anomaly_freq.errors import AfreqError
from anomaly_freq.metrics.evaluator import Evaluator

PREFIX = "best_on_test_"
METRICS = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max",
           "pixel_aupro")
log = logging.getLogger(__name__)


class BestOnTestMonitor(pl.Callback):
    """Every ``every_n_epochs`` epochs (and after the last), score the test set."""

    def __init__(self, make_evaluator: Callable[[], Evaluator], loader: Callable[[], Iterable],
                 every_n_epochs: int, select_by: list[str], path: Path) -> None:
        if every_n_epochs < 1:
            raise AfreqError(f"eval.test_every_n_epochs={every_n_epochs} must be at least 1 "
                             "(0 turns the test-set monitor off)")
        unknown = [m for m in select_by if m not in METRICS]
        if not select_by or unknown:
            raise AfreqError(f"eval.best_on_test_by={list(select_by)} must name metrics from "
                             f"{', '.join(METRICS)}")
        self.make_evaluator, self.loader = make_evaluator, loader
        self.every, self.select_by, self.path = every_n_epochs, list(select_by), path
        self.curve: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every and epoch != trainer.max_epochs:
            return
        states = _random_states()
        was_training = pl_module.training
        pl_module.eval()
        try:
            pl_module.prepare_for_inference()
            evaluator = self.make_evaluator()
            with torch.no_grad():
                for i, batch in enumerate(self.loader()):
                    batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                    evaluator.update(batch, pl_module.predict_step(batch, i))
            metrics = evaluator.compute()
        finally:
            pl_module.train(was_training)
            _restore_random_states(states)
        self.curve.append({"epoch": epoch, **metrics})
        write_csv(self.path, self.curve)

    def best(self) -> dict[str, float]:
        """The chosen evaluation's metrics, prefixed; empty when none ran."""
        if not self.curve:
            return {}
        present = [m for m in self.select_by if m in self.curve[0]]
        if present != self.select_by:  # pixel metrics on a dataset without masks
            log.warning("selecting the best test evaluation by %s only: this dataset gives no %s",
                        "+".join(present), ", ".join(set(self.select_by) - set(present)))
        if not present:
            return {}
        # the first of equal evaluations, as a loop keeping the strictly better one would
        row = max(self.curve, key=lambda r: sum(r[m] for m in present))
        return {f"{PREFIX}{key}": value for key, value in row.items()}


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
