"""Shared fixtures: every test writes generated data and runs under temporary folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
