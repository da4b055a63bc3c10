"""Datasets; importing this package registers the in-tree ones."""

from anomaly_freq.data.datamodule import AnomalyDataModule
from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.data.sources import DatasetSource, SyntheticSource

__all__ = ["AnomalyDataModule", "DatasetSource", "Sample", "SyntheticSource"]
