"""The result store: every finished run folder as rows of one long-format table.

A unified run (``dataset.setting=unified``) gives the rows of each category it scored, with
``setting`` unified; its runs share one config hash, so a run's rows are told apart by
``config_hash`` and ``category`` together.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from anomaly_freq.config import CONFIG_DIR
from anomaly_freq.run.rundir import FINISHED_MARKER, PER_CATEGORY, UNIFIED, config_hash

PROTOCOL_FIELDS = ("eval_resolution", "image_size", "resize", "epochs", "shot_copies",
                   "model_selection", "score_normalisation", "pro_variant", "learning_type",
                   "processes", "precision")
COLUMNS = ["method", "preset", "dataset", "data", "category", "setting", "seed", "shots",
           "shot_seed", "metric", "value", "config_hash", "variant", "group", *PROTOCOL_FIELDS,
           "run_dir"]
SEED_KEYS = ("seed", "dataset.shot_seed")  # runs that differ only here are seeds of one group
# Keys of a dataset's own config file that say where or which part of it, not what data it is.
NOT_DATA_KEYS = ("name", "root", "category")


def finished_runs(root: Path) -> Iterator[Path]:
    """Run folders under ``root`` whose metrics.json exists (written last, so complete)."""
    if root.is_dir():
        for marker in sorted(root.glob(f"*/*/*/*/{FINISHED_MARKER}")):
            yield marker.parent


def finished_hashes(root: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for run_dir in finished_runs(root):
        index.setdefault(_protocol(run_dir).get("config_hash", ""), []).append(run_dir)
    return index


def is_finished(root: Path, config_hash: str) -> bool:
    """Whether a finished run of this configuration exists under ``root``; reads only the run
    folders named after the hash (``<stamp>-<hash[:8]>``), not the whole store."""
    return any(_protocol(marker.parent).get("config_hash") == config_hash
               for marker in root.glob(f"*/*/*/*-{config_hash[:8]}*/{FINISHED_MARKER}"))


def _protocol(run_dir: Path) -> dict:
    path = run_dir / "protocol.json"
    return json.loads(path.read_text()) if path.exists() else {}


def data_settings(cfg: DictConfig) -> str:
    """The dataset's own settings that differ from its config file, e.g. ``defect_strength=0.3``;
    empty for the data as shipped (a key an older run lacks counts as its default)."""
    shipped = _shipped_dataset(cfg.dataset.name)
    return ", ".join(f"{key}={cfg.dataset[key]}" for key in shipped
                     if key not in NOT_DATA_KEYS and key in cfg.dataset
                     and cfg.dataset[key] != shipped[key])


@functools.cache
def _shipped_dataset(name: str) -> DictConfig:
    path = CONFIG_DIR / "dataset" / f"{name}.yaml"
    return OmegaConf.load(path).dataset if path.exists() else OmegaConf.create()


def load_results(root: Path) -> pd.DataFrame:
    """One row per run × metric (× category, for a unified run), with the run's identity and
    protocol fields."""
    rows = []
    for run_dir in finished_runs(root):
        cfg = OmegaConf.load(run_dir / "config.yaml")
        protocol = _protocol(run_dir)
        metrics = json.loads((run_dir / FINISHED_MARKER).read_text())
        base = {
            "method": cfg.method.name,
            "preset": cfg.method.get("preset") or cfg.method.name,
            "dataset": cfg.dataset.name,
            "data": data_settings(cfg),
            "category": cfg.dataset.category,
            "setting": cfg.dataset.get("setting", PER_CATEGORY),  # older runs lack the key
            "seed": cfg.seed,
            "shots": cfg.dataset.get("shots"),
            "shot_seed": cfg.dataset.get("shot_seed") if cfg.dataset.get("shots") else None,
            "config_hash": protocol.get("config_hash", config_hash(cfg)),
            # the same experiment on another category or seed shares this
            "variant": config_hash(cfg, ignore=("dataset.category", *SEED_KEYS)),
            "group": config_hash(cfg, ignore=SEED_KEYS),
            **{field: protocol.get(field) for field in PROTOCOL_FIELDS},
            "run_dir": str(run_dir),
        }
        if base["setting"] != UNIFIED:
            rows += _rows(base, metrics)
            continue
        for category, values in metrics["categories"].items():
            rows += _rows({**base, "category": category,
                           "group": config_hash(cfg, ignore=SEED_KEYS, category=category)},
                          values)
    return pd.DataFrame(rows, columns=COLUMNS)


def _rows(base: dict, metrics: dict) -> list[dict]:
    return [{**base, "metric": metric, "value": float(value)} for metric, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)]
