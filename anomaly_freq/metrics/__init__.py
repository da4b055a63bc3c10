"""Metrics computed from collected predictions (interim: image and pixel AUROC via scikit-learn)."""

from anomaly_freq.metrics.collect import PredictionCollector, compute_metrics

__all__ = ["PredictionCollector", "compute_metrics"]
