"""Datasets; importing this package registers the in-tree ones."""

from anomaly_freq.data import (  # noqa: F401  (each registers its dataset)
    cifar10,
    dagm,
    folder,
    kolektorsdd,
    mvtec_ad,
    synthetic,
    visa,
)
from anomaly_freq.data.datamodule import AnomalyDataModule
from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.data.sources import DatasetSource, cache_dir

__all__ = ["AnomalyDataModule", "DatasetSource", "Sample", "cache_dir"]
