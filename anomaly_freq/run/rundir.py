"""Run folders: a crashed run never leaves a result that looks finished.

``metrics.json`` is written last and only on success; its presence marks a finished run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

FINISHED_MARKER = "metrics.json"


# Keys left out of the hash: where, how fast or how visibly a run happens. The device keys
# are among them on purpose: a point finished on one GPU counts as finished on four, although
# DDP trains with a larger effective batch; protocol.json and `afreq results` record
# `processes`, so runs on different device counts can be told apart.
NON_EXPERIMENT_KEYS = ("output", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
                       "dataset.num_workers", "dataset.cache", "dataset.root", "method.preset",
                       "method.channels_last", "method.compile", "trainer.devices",
                       "trainer.num_nodes", "trainer.strategy", "logger", "tracking")


# dataset.setting: one model per category, or one unified model for several (run/unified.py)
PER_CATEGORY, UNIFIED = "per_category", "unified"
# Experiment keys added after runs existed, left out of the hash at these values (their
# defaults), so that the runs made before them keep their hashes and stay finished.
LATER_KEYS = {"dataset.setting": PER_CATEGORY}


def config_hash(cfg: DictConfig, ignore: tuple[str, ...] = (), category: str | None = None) -> str:
    """Hash of the resolved config without non-experiment keys: equal hash, equal experiment.
    ``category`` replaces ``dataset.category`` first (one category of a unified run)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    if category is not None:
        data["dataset"]["category"] = category
    for dotted in (*NON_EXPERIMENT_KEYS, *ignore, *LATER_KEYS):
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        if dotted not in LATER_KEYS or node.get(leaf) == LATER_KEYS[dotted]:
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def create_run_dir(cfg: DictConfig, category: str) -> Path:
    parent = (
        Path(cfg.output.root) / cfg.method.name / cfg.dataset.name / category
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{config_hash(cfg)[:8]}"
    for attempt in range(1000):
        path = parent / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run folder under {parent}")


def environment() -> dict[str, Any]:
    """Versions and hardware that a reader needs to judge or repeat a result."""
    import torch

    packages = {}
    for name in ("anomaly_freq", "torch", "torchvision", "pytorch-lightning", "timm", "kornia",
                 "numpy", "scikit-learn", "scipy", "omegaconf"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": packages,
    }
