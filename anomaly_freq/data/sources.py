"""Dataset sources: a registered class per dataset that lists categories and their samples."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from anomaly_freq.data import synthetic
from anomaly_freq.data.mvtec_layout import Sample, read_category
from anomaly_freq.errors import AfreqError
from anomaly_freq.registry import register_dataset


def cache_dir() -> Path:
    """Where generated data lives: $AFREQ_CACHE, else $XDG_CACHE_HOME/anomaly_freq."""
    if "AFREQ_CACHE" in os.environ:
        return Path(os.environ["AFREQ_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anomaly_freq"


class DatasetSource:
    """Base class: `categories()`, `group(category)` and `samples(category)`."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def categories(self) -> list[str]:
        raise NotImplementedError

    def group(self, category: str) -> str:
        return ""

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        raise NotImplementedError

    def check_category(self, category: str) -> None:
        valid = self.categories()
        if category not in valid:
            raise AfreqError(
                f"unknown category '{category}' for dataset '{self.cfg.dataset.name}'; "
                f"valid: {', '.join(valid)} (or all)"
            )


@register_dataset("synthetic")
class SyntheticSource(DatasetSource):
    """The embedded procedural set (see `anomaly_freq.data.synthetic`)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        d = cfg.dataset
        self.spec = synthetic.SyntheticSpec(
            seed=d.seed, size=d.size, n_train=d.n_train, n_test_good=d.n_test_good,
            n_test_per_defect=d.n_test_per_defect,
        )
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            base = Path(self.cfg.dataset.root) if self.cfg.dataset.root else cache_dir()
            self._root = synthetic.ensure_generated(base / "synthetic", self.spec)
        return self._root

    def categories(self) -> list[str]:
        return list(synthetic.CATEGORIES)

    def group(self, category: str) -> str:
        return synthetic.CATEGORIES[category].group

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        return read_category(self.root / category)
