"""The numbers the papers printed: `experiments/published/<paper>.csv`, loaded and validated.

Columns: paper, version, table, dataset, category, setting, metric, value, notes. `paper` is the
method a row reports (the competitors a paper copied are kept too); the file name is the paper
that printed it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from anomaly_freq.data import cifar10, dagm, mvtec_ad, visa
from anomaly_freq.errors import AfreqError

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "experiments" / "published"
COLUMNS = ["paper", "version", "table", "dataset", "category", "setting", "metric", "value",
           "notes"]
SUMMARY_ROWS = ("mean", "mean_texture", "mean_object")
CATEGORIES = {
    "mvtec_ad": set(mvtec_ad.TEXTURES + mvtec_ad.OBJECTS),
    "visa": set(visa.OBJECTS),
    "dagm": set(dagm.CLASSES),
    "kolektorsdd": set(),
    "cifar10": set(cifar10.CLASSES),
    "mvtec_ad_and_visa": set(),
    "unspecified": set(),
}
METRICS = {
    "image_auroc", "pixel_auroc", "pro", "image_auroc_stderr", "image_auroc_gain_vs_baseline",
    "normal_recon_mse_1e-4", "fps", "params_mb", "train_time_per_epoch_s", "train_flops_g",
    "inference_time_per_image_s",
}


def load_published(folder: Path = PUBLISHED_DIR) -> pd.DataFrame:
    """All published rows; `source` names the file (the printing paper), `printed` keeps the
    value's text so its precision is known."""
    frames = []
    for path in sorted(folder.glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        validate(frame, path)
        frames.append(frame.assign(source=path.stem, printed=frame["value"],
                                   value=frame["value"].astype(float)))
    if not frames:
        raise AfreqError(f"no published CSV files in {folder}: run from a clone of the "
                         "repository, or pass --experiments with its experiments/ folder")
    return pd.concat(frames, ignore_index=True)


def validate(frame: pd.DataFrame, path: Path) -> None:
    """Known columns, datasets, categories and metrics; numeric values. Errors name the line."""
    if list(frame.columns) != COLUMNS:
        raise AfreqError(f"{path}: columns must be {','.join(COLUMNS)}")
    for index, row in frame.iterrows():
        where = f"{path}:{index + 2}"
        if row["dataset"] not in CATEGORIES:
            raise AfreqError(f"{where}: unknown dataset '{row['dataset']}'")
        allowed = CATEGORIES[row["dataset"]] | set(SUMMARY_ROWS)
        if row["dataset"] in ("mvtec_ad", "visa", "dagm", "cifar10") and (
            row["category"] not in allowed
        ):
            raise AfreqError(f"{where}: unknown {row['dataset']} category '{row['category']}'")
        if row["metric"] not in METRICS:
            raise AfreqError(f"{where}: unknown metric '{row['metric']}'")
        try:
            float(row["value"])
        except ValueError:
            raise AfreqError(f"{where}: value '{row['value']}' is not a number") from None
