"""Shared fixtures: every test writes generated data and runs under temporary folders."""

from __future__ import annotations

import os
import subprocess
import sys
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


def naive_code_normalise(part):
    """DFD's pixel normalisation as its code writes it, for one discriminator's maps N×H×W of
    a set: the broadcasting gives entry [i, j] = (P_j − min P_i) / r_i (an N×N×H×W
    intermediate, so tiny inputs only), then the mean over i."""
    flat = part.reshape(part.shape[0], -1)
    low = flat.amin(1)[:, None, None]
    high = flat.amax(1)[:, None, None]
    scaled = (part[None] - low[:, None]) / (high - low)[:, None]
    return scaled.mean(0)


DOCS = Path(__file__).resolve().parents[1] / "docs"
# The example in the plugin guide is the plugin the tests install, so the guide stays correct.
PLUGIN_SOURCE = (DOCS / "plugins.md").read_text().split("```python\n")[1].split("```")[0]


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
