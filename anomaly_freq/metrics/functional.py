"""Threshold-free metrics on raw scores, from one descending sort (no sigmoid, no binning).

>>> import numpy as np
>>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
0.75
"""

from __future__ import annotations

import warnings

import numpy as np

from anomaly_freq.errors import AfreqError


def binary_curve(scores: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positives, true positives, thresholds) at each distinct score, highest first."""
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if not np.isfinite(scores).all():
        raise AfreqError("scores contain NaN or infinite values; the method's output is broken")
    if labels.all() or not labels.any():
        raise AfreqError("the labels hold one class only; AUROC and AP need normal and anomalous "
                         "samples")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tps = np.cumsum(sorted_labels, dtype=np.int64)[last]
    fps = (last + 1) - tps
    return fps, tps, sorted_scores[last]


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR), starting at (0, 0)."""
    fps, tps, _ = binary_curve(scores, labels)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; ties count half, as in scikit-learn)."""
    fpr, tpr = roc_curve(scores, labels)
    if fpr.size == 2:
        warnings.warn("all scores are equal: AUROC is 0.5 by definition", stacklevel=2)
    return float(np.trapezoid(tpr, fpr))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Σ (R_n − R_{n−1}) P_n over distinct thresholds (scikit-learn's definition)."""
    fps, tps, _ = binary_curve(scores, labels)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best F1 over all thresholds."""
    fps, tps, _ = binary_curve(scores, labels)
    positives = tps[-1]
    f1 = 2 * tps / (tps + fps + positives)
    return float(f1.max())
