"""Experiment trackers: TensorBoard and MLflow write local files; a missing one is one line."""

from __future__ import annotations

import importlib.util
import json

import pytest

from anomaly_freq.config import load_config
from anomaly_freq.errors import AfreqError
from anomaly_freq.run.engine import run
from tests.conftest import TINY_SYNTHETIC


def _run(tmp_path, *extra):
    cfg = load_config(["dataset.category=granite", f"output.root={tmp_path}", *TINY_SYNTHETIC,
                       *extra])
    (result,) = run(cfg)
    return result


def test_tensorboard_receives_config_metrics_protocol_and_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _run(tmp_path, "logger=tensorboard")
    (folder,) = {p.parent for p in (tmp_path / "tensorboard").rglob("events.out.tfevents.*")}
    assert folder.name == result.run_dir.name  # one folder per run, named after it
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    (auroc,) = acc.Scalars("final/image_auroc")
    assert auroc.value == pytest.approx(result.metrics["image_auroc"])
    assert {"figures/roc", "figures/pro"} <= set(tags["images"])
    assert any(tag.startswith("protocol") for tag in tags["tensors"])
    assert _hparams(folder)["method.name"].string_value == "freqstat"  # the HPARAMS view


def _hparams(folder):
    """The configuration TensorBoard's HPARAMS view shows for the run in ``folder``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    for path in folder.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    return data.session_start_info.hparams
    raise AssertionError(f"no hyperparameters under {folder}")


def test_mlflow_file_store_holds_params_metrics_and_artifacts(tmp_path):
    from mlflow.tracking import MlflowClient

    result = _run(tmp_path, "logger=mlflow", "tracking.experiment=trackers-test")
    client = MlflowClient(f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trackers-test")
    (record,) = client.search_runs([experiment.experiment_id])
    assert record.data.params["method.name"] == "freqstat"
    assert record.data.params["dataset.category"] == "granite"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert record.data.metrics["final/image_auroc"] == pytest.approx(metrics["image_auroc"])
    artifacts = {a.path for a in client.list_artifacts(record.info.run_id)}
    figures = {a.path for a in client.list_artifacts(record.info.run_id, "figures")}
    assert "protocol.json" in artifacts and "figures/roc.png" in figures
    assert record.info.status == "FINISHED"


def test_a_missing_tracker_is_one_line_naming_the_extra_and_writes_nothing(tmp_path,
                                                                           monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(AfreqError, match=r"anomaly_freq\[mlflow\]") as err:
        _run(tmp_path, "logger=mlflow")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "freqstat").exists()


def test_an_unknown_tracker_names_the_valid_ones(tmp_path):
    with pytest.raises(AfreqError, match="logger=comet is unknown; valid: csv, tensorboard"):
        _run(tmp_path, "logger=comet")


def test_a_failing_tracker_loses_no_result(tmp_path, monkeypatch, caplog):
    from anomaly_freq.run import trackers

    def broken(*args):
        raise ConnectionError("tracking server gone\nsecond line")

    monkeypatch.setattr(trackers, "_log_to", broken)
    result = _run(tmp_path, "logger=tensorboard")
    assert (result.run_dir / "metrics.json").is_file()
    assert "did not receive the results: tracking server gone" in caplog.text
    assert "second line" not in caplog.text
