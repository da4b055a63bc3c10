"""The test-set monitor: the papers' best-epoch numbers recorded beside the last epoch's."""

import csv
import hashlib
import json
import random

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from anomaly_freq.config import load_config
from anomaly_freq.errors import AfreqError
from anomaly_freq.metrics.monitor import BestOnTestMonitor
from anomaly_freq.run import engine
from anomaly_freq.run.engine import run
from tests.conftest import TINY_SYNTHETIC

# DFD (its scoring needs statistics of the training images) at toy scale: three epochs.
TINY_DFD = ["method=dfd_fast", "dataset.shots=1", "dataset.shot_copies=8",
            "dataset.category=washer", "dataset.size=96", "dataset.n_test_good=6",
            "dataset.n_test_per_defect=2", "dataset.num_workers=0", "trainer.max_epochs=3",
            "output.save_checkpoint=false", "trainer.enable_progress_bar=false"]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_monitor_records_the_curve_without_changing_training(tmp_path, one_thread):
    (plain,) = run(load_config([*TINY_DFD, f"output.root={tmp_path / 'a'}"]))
    (watched,) = run(load_config([
        *TINY_DFD, f"output.root={tmp_path / 'b'}", "eval.test_every_n_epochs=2",
        "eval.best_on_test_by=[image_auroc,pixel_auroc,pixel_aupro]"]))
    best = {k: v for k, v in watched.metrics.items() if k.startswith("best_on_test_")}
    last = {k: v for k, v in watched.metrics.items() if k not in best and k != "category"}
    assert last == {k: v for k, v in plain.metrics.items() if k != "category"}

    with (watched.run_dir / "test_curve.csv").open() as handle:
        curve = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    assert [row["epoch"] for row in curve] == [2, 3]  # every 2 epochs, and after the last
    assert curve[-1]["image_auroc"] == pytest.approx(last["image_auroc"], abs=1e-6)
    chosen = max(curve, key=lambda r: r["image_auroc"] + r["pixel_auroc"] + r["pixel_aupro"])
    assert best["best_on_test_epoch"] == chosen["epoch"]
    assert best["best_on_test_pixel_aupro"] == chosen["pixel_aupro"]
    assert json.loads((watched.run_dir / "metrics.json").read_text())["best_on_test_epoch"] > 0
    protocol = json.loads((watched.run_dir / "protocol.json").read_text())
    assert protocol["model_selection"] == "last_epoch"
    assert protocol["best_on_test"].startswith("every 2 epochs")
    assert (watched.run_dir / "figures" / "test_curve.png").stat().st_size > 0
    assert "test_curve.png" in (watched.run_dir / "report.md").read_text()


def test_monitor_rejects_bad_settings(tmp_path):
    with pytest.raises(AfreqError, match="image_aucroc"):
        BestOnTestMonitor(lambda: None, 1, ["image_aucroc"], tmp_path / "c.csv")
    with pytest.raises(AfreqError, match="test_every_n_epochs=-1"):
        BestOnTestMonitor(lambda: None, -1, ["image_auroc"], tmp_path / "c.csv")


def test_monitor_scores_an_epoch_with_the_statistics_of_that_epoch(tmp_path):
    # freqstat's statistics are finished by prepare_for_inference, which the validation loop
    # runs before it scores (Lightning validates before on_train_epoch_end).
    tiny = [*TINY_SYNTHETIC, "dataset.category=chip", "output.save_checkpoint=false",
            "output.report_images=0"]
    (plain,) = run(load_config([*tiny, f"output.root={tmp_path / 'a'}"]))
    (watched,) = run(load_config([*tiny, f"output.root={tmp_path / 'b'}",
                                  "eval.test_every_n_epochs=1"]))
    with (watched.run_dir / "test_curve.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert set(row) == {"epoch", "image_auroc", "image_ap", "image_f1max"}  # image-only choice
    assert float(row["image_auroc"]) == pytest.approx(plain.metrics["image_auroc"], abs=1e-9)
    assert watched.metrics["best_on_test_epoch"] == 1
    assert watched.metrics["pixel_aupro"] == plain.metrics["pixel_aupro"]


def test_best_skips_evaluations_with_nan(tmp_path, caplog):
    monitor = BestOnTestMonitor(lambda: None, 1, ["image_auroc", "pixel_aupro"],
                                tmp_path / "c.csv")
    monitor.curve = [{"epoch": 1, "image_auroc": 0.9, "pixel_aupro": float("nan")},
                     {"epoch": 2, "image_auroc": 0.6, "pixel_aupro": 0.5},
                     {"epoch": 3, "image_auroc": 0.7, "pixel_aupro": 0.4}]
    assert monitor.best()["best_on_test_epoch"] == 2
    monitor.curve = [{"epoch": 1, "image_auroc": 0.9}]  # no masks: image AUROC alone chooses
    assert monitor.best()["best_on_test_image_auroc"] == 0.9
    assert "chosen by image_auroc only; this run gives no pixel_aupro" in caplog.text
    pixel_only = BestOnTestMonitor(lambda: None, 1, ["pixel_aupro"], tmp_path / "c.csv")
    pixel_only.curve = monitor.curve
    assert pixel_only.best() == {}
    assert "no best_on_test_* recorded: this run gives none of pixel_aupro" in caplog.text


class RandomStateProbe(pl.Callback):
    """Records a digest of the global random states at each epoch's start and training's end,
    and the epochs that Lightning validated."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self.validated: list[int] = []

    def _record(self) -> None:
        states = (torch.get_rng_state().numpy().tobytes() + np.random.get_state()[1].tobytes()
                  + repr(random.getstate()).encode())
        self.states.append(hashlib.sha1(states).hexdigest())

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._record()

    def on_train_end(self, trainer, pl_module) -> None:
        self._record()

    def on_validation_start(self, trainer, pl_module) -> None:
        self.validated.append(trainer.current_epoch + 1)


def test_monitor_validates_in_lightning_and_leaves_training_draws_alone(tmp_path, monkeypatch):
    # Lightning's validation loop draws its loader's seed from the global generator before any
    # validation hook runs; the monitor must still give training back the states it had.
    probes, make_trainer = [], engine.make_trainer

    def probed_trainer(cfg, method, callbacks):
        probes.append(RandomStateProbe())
        return make_trainer(cfg, method, [*callbacks, probes[-1]])

    monkeypatch.setattr(engine, "make_trainer", probed_trainer)
    tiny = ["method=ocrgan_fast", *TINY_SYNTHETIC, "dataset.category=weave",
            "trainer.max_epochs=3", "dataset.num_workers=0", "output.save_checkpoint=false",
            "output.report_images=0"]
    run(load_config([*tiny, f"output.root={tmp_path / 'a'}"]))
    run(load_config([*tiny, f"output.root={tmp_path / 'b'}", "eval.test_every_n_epochs=2"]))
    plain, monitored = probes
    assert (plain.validated, monitored.validated) == ([], [2, 3])
    assert monitored.states == plain.states
