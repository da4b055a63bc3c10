"""`afreq results`: finished runs grouped by configuration, seeds aggregated within a group.

A group holds the runs of one configuration but its seeds (``seed``, ``dataset.shot_seed``), of
one preset and one process count; a rerun of a configuration counts once, at its mean. The
columns are the identity keys that differ between groups (method, preset, category, setting, ...)
and, for groups that agree on all of those, the configuration keys that tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf
from rich.table import Table

from anomaly_freq.run.rundir import NON_EXPERIMENT_KEYS
from anomaly_freq.run.store import SEED_KEYS

IDENTITY = ("method", "preset", "dataset", "data", "category", "setting", "image_size", "resize",
            "shots", "shot_copies", "epochs", "eval_resolution", "model_selection",
            "score_normalisation", "pro_variant", "learning_type", "processes", "precision")
FIRST_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


@dataclass
class Groups:
    rows: pd.DataFrame  # a group each: its columns, n, <metric>_mean, <metric>_std, group hash
    columns: list[str]  # the columns that tell the groups apart
    shared: dict[str, str]  # identity keys with one value in every group
    metrics: list[str]


def group_runs(frame: pd.DataFrame) -> Groups:
    """The result store's rows (one per run and metric) as one row per group."""
    if frame.empty:
        return Groups(pd.DataFrame(columns=["n", "group"]), [], {}, [])
    frame = frame.assign(key=frame["group"].astype(str) + "/" + frame["preset"].astype(str)
                         + "/" + frame["processes"].astype(str))
    first = frame.drop_duplicates("key").set_index("key")
    identity = pd.DataFrame({c: first[c].map(_show) for c in IDENTITY}, index=first.index)
    identity["shots"] = identity["shots"].replace("—", "all")
    columns = [c for c in IDENTITY if identity[c].nunique() > 1]
    shared = {c: identity[c].iloc[0] for c in IDENTITY if c not in columns}
    extra = _telling_apart(identity[columns], first["run_dir"])
    table = pd.concat([identity[columns], extra], axis=1)
    table["n"] = frame.groupby("key")["config_hash"].nunique()
    per_run = frame.groupby(["key", "config_hash", "metric"], sort=False)["value"].mean()
    stats = per_run.groupby(level=["key", "metric"], sort=False).agg(["mean", "std"])
    present = set(frame["metric"])
    metrics = [m for m in FIRST_METRICS if m in present] + sorted(present - set(FIRST_METRICS))
    for metric in metrics:
        for stat in ("mean", "std"):
            table[f"{metric}_{stat}"] = stats[stat].xs(metric, level="metric")
    table["group"] = first["group"]
    return Groups(table.reset_index(drop=True), [*columns, *extra.columns], shared, metrics)


def _show(value: Any) -> str:
    if value is None or value == "" or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _telling_apart(shown: pd.DataFrame, run_dirs: pd.Series) -> pd.DataFrame:
    """Configuration keys that differ between groups whose ``shown`` columns are alike."""
    alike: dict[tuple, list[str]] = {}
    for key, row in shown.iterrows():
        alike.setdefault(tuple(row), []).append(key)
    clashes = [keys for keys in alike.values() if len(keys) > 1]
    if not clashes:
        return pd.DataFrame(index=shown.index)
    settings = {key: _settings(Path(run_dirs[key])) for key in shown.index}
    names = dict.fromkeys(name for keys in clashes
                          for name in _differing([settings[k] for k in keys]))
    return pd.DataFrame({name: [_show(settings[k].get(name)) for k in shown.index]
                         for name in names}, index=shown.index)


def _differing(configs: list[dict[str, Any]]) -> list[str]:
    names = dict.fromkeys(name for config in configs for name in config)
    return [name for name in names if len({repr(c.get(name)) for c in configs}) > 1]


def _settings(run_dir: Path) -> dict[str, Any]:
    """A run's configuration as dotted keys, without the keys that change no result."""
    tree = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    left_out = (*NON_EXPERIMENT_KEYS, *SEED_KEYS, "dataset.category")
    return {name: value for name, value in _flatten(tree).items()
            if not any(name == k or name.startswith(f"{k}.") for k in left_out)}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def results_table(groups: Groups, root: str) -> Table:
    """The groups as a printable table: mean ± std over the seeds of each group."""
    caption = " · ".join(f"{k} {v}" for k, v in groups.shared.items() if v != "—")
    table = Table(title=f"results under {root}: mean ± std over the n seeds of each group",
                  caption=f"same in every group: {caption}" if caption else None)
    for column in [*groups.columns, "n", *groups.metrics]:
        table.add_column(column, overflow="fold")
    for _, row in groups.rows.iterrows():
        cells = [row[c] for c in groups.columns] + [str(row["n"])]
        for metric in groups.metrics:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            cells.append("—" if pd.isna(mean) else f"{mean:.4f}" if pd.isna(std)
                         else f"{mean:.4f} ± {std:.4f}")
        table.add_row(*cells)
    return table
