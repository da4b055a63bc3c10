"""What every dataset source is: the base class each registered dataset (one module per dataset
in this package) derives from, and the helpers they share."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from anomaly_freq.data.mvtec_layout import Sample, require_layout
from anomaly_freq.errors import AfreqError


def cache_dir() -> Path:
    """Where generated data and decoded images live: $AFREQ_CACHE, else ~/.cache/anomaly_freq."""
    if "AFREQ_CACHE" in os.environ:
        return Path(os.environ["AFREQ_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anomaly_freq"


class DatasetSource:
    """Base class: `categories()`, `group(category)` and `samples(category)`; `present()` for
    the categories on disk when some may be missing."""

    #: what ``dataset.root`` should hold, for the message when none of it is there
    expected = ""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def categories(self) -> list[str]:
        raise NotImplementedError

    def present(self) -> list[str]:
        """The categories whose data is on disk, in the order of `categories()`."""
        return self.categories()

    def not_found(self) -> AfreqError:
        return missing_root(self.cfg.dataset.name, self.root(), self.expected)

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

    def root(self) -> Path:
        root = self.cfg.dataset.get("root")
        return Path(root) if root else Path("datasets") / self.cfg.dataset.name


def missing_root(name: str, root: Path, expected: str) -> AfreqError:
    return AfreqError(
        f"{name} not found at {root}: download it with `afreq data download {name} --root "
        f"{root}`, or point dataset.root at the folder that holds {expected}"
    )


def refuse_without_layout(source: DatasetSource, category: str, *folders: Path) -> None:
    """A category folder asked for by name that lacks the layout is named with what it lacks,
    rather than called an unknown category."""
    if category not in source.categories():
        for folder in folders:
            if folder.is_dir():
                require_layout(folder)
