"""Metrics: threshold-free image/pixel metrics, AUPRO variants and the evaluator."""

from anomaly_freq.metrics.evaluator import Evaluator, EvaluatorCallback
from anomaly_freq.metrics.functional import auroc, average_precision, f1_max
from anomaly_freq.metrics.pro import aupro

__all__ = ["Evaluator", "EvaluatorCallback", "aupro", "auroc", "average_precision", "f1_max"]
