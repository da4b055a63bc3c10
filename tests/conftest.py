"""Shared fixtures: every test writes generated data and runs under temporary folders."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from anomaly_freq import registry

# Small enough that a whole freqstat run on one category takes a second or two.
TINY_SYNTHETIC = [
    "dataset.size=96", "dataset.image_size=64", "eval.resolution=64", "dataset.n_train=12",
    "dataset.n_test_good=6", "dataset.n_test_per_defect=2", "trainer.enable_progress_bar=false",
]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Generated datasets go to one per-session cache, never to the user's home."""
    cache = tmp_path_factory.getbasetemp() / "afreq-cache"
    monkeypatch.setenv("AFREQ_CACHE", str(cache))
    return cache


def run_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `afreq` in a fresh interpreter, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "anomaly_freq.cli", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600,
    )


PLUGIN_SOURCE = textwrap.dedent('''
    """A third-party method: distance of each pixel from the mean training image."""
    import torch
    from anomaly_freq.methods.base import AnomalyModule

    class MeanImage(AnomalyModule):
        trainer_arguments = {"max_epochs": 1}
        default_config = {"method": {"name": "mean_image", "power": 2.0}}

        def __init__(self, cfg):
            super().__init__(cfg)
            self.automatic_optimization = False
            self.power = float(cfg.method.power)
            self.register_buffer("mean", torch.zeros(0))
            self.total, self.count = None, 0

        def configure_optimizers(self):
            return None

        def training_step(self, batch, batch_idx):
            s = batch["image"].sum(0, keepdim=True)
            self.total = s if self.total is None else self.total + s
            self.count += batch["image"].shape[0]

        def on_train_epoch_end(self):
            self.mean = self.total / self.count

        def predict_step(self, batch, batch_idx=0):
            amap = (batch["image"] - self.mean).abs().pow(self.power).mean(1, keepdim=True)
            return {"anomaly_map": amap, "pred_score": amap.flatten(1).amax(1)}
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A tiny installed distribution that exposes a method through the entry-point group."""
    site = tmp_path / "site"
    (site / "afreq_test_plugin").mkdir(parents=True)
    (site / "afreq_test_plugin" / "__init__.py").write_text(PLUGIN_SOURCE)
    info = site / "afreq_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: afreq-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[anomaly_freq.methods]\nmean_image = afreq_test_plugin:MeanImage\n"
    )
    monkeypatch.syspath_prepend(str(site))
    registry.reset_plugin_cache()
    yield site
    registry._METHODS.pop("mean_image", None)
    sys.modules.pop("afreq_test_plugin", None)
    registry.reset_plugin_cache()
