"""`afreq data check`: which categories of a dataset are present, missing or corrupt."""

from __future__ import annotations

from omegaconf import DictConfig
from rich.table import Table

from anomaly_freq import registry
from anomaly_freq.data.images import decode_image, decode_mask
from anomaly_freq.errors import AfreqError


def check_dataset(cfg: DictConfig, deep: bool = False) -> tuple[Table, bool]:
    """A table with one row per category, and whether every category is usable."""
    source = registry.create_dataset(cfg.dataset.name, cfg)
    table = Table(title=f"{cfg.dataset.name} at {source.root()}")
    for column in ("category", "status", "train", "test good", "test defect", "masks"):
        table.add_column(column)
    all_ok = True
    for category in source.categories():
        try:
            train, test = source.samples(category)
            if deep:
                for s in [*train, *test]:
                    decode_image(s.path, 8)
                    if s.mask is not None:
                        decode_mask(s.mask, s.path, 8)
        except AfreqError as err:
            all_ok = False
            status = "missing" if "not found" in str(err) or "missing" in str(err) else "corrupt"
            table.add_row(category, f"[red]{status}[/]: {err}", "", "", "", "")
            continue
        defects = [s for s in test if s.label]
        table.add_row(category, "[green]ok[/]", str(len(train)), str(len(test) - len(defects)),
                      str(len(defects)), str(sum(s.mask is not None for s in defects)))
    return table, all_ok
