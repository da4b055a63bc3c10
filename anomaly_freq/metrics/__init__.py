"""Metrics: threshold-free image/pixel metrics, AUPRO variants and the evaluator."""

from anomaly_freq.metrics.evaluator import Evaluator, EvaluatorCallback
from anomaly_freq.metrics.functional import (
    auroc,
    average_precision,
    binary_metrics,
    f1_max,
    roc_curve,
)
from anomaly_freq.metrics.pro import aupro, pro_curve

__all__ = ["Evaluator", "EvaluatorCallback", "aupro", "auroc", "average_precision",
           "binary_metrics", "f1_max", "pro_curve", "roc_curve"]
