"""Threshold-free metrics on raw scores, from sorted scores (no sigmoid, no binning).

>>> import numpy as np
>>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
0.75
"""

from __future__ import annotations

import warnings

import numpy as np

from anomaly_freq.errors import AfreqError


def merged_counts(negatives: np.ndarray, positives: np.ndarray, weights: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(negatives ≥ t, Σ positive weights ≥ t, t) at each distinct score t, highest first.

    ``negatives`` and ``positives`` (with their ``weights``, default 1) are sorted ascending;
    merging them gives the order one global sort of all scores would give.
    """
    at = np.searchsorted(negatives, positives) + np.arange(positives.size)
    size = negatives.size + positives.size
    is_positive = np.zeros(size, dtype=bool)
    is_positive[at] = True
    merged = np.empty(size, dtype=np.result_type(negatives, positives))
    merged[at], merged[~is_positive] = positives, negatives
    # ascending, the first of each run of equal scores is the last of it in descending order
    first = np.empty(size, dtype=bool)
    first[0] = True
    np.not_equal(merged[1:], merged[:-1], out=first[1:])
    first = np.flatnonzero(first)[::-1]
    below = np.cumsum(is_positive, dtype=np.int64)[first] - is_positive[first]
    n_positive = positives.size - below
    fps = negatives.size - (first - below)
    if weights is None:
        return fps, n_positive, merged[first]
    return fps, np.r_[0.0, np.cumsum(weights[::-1])][n_positive], merged[first]


def binary_curve(scores: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positives, true positives, thresholds) at each distinct score, highest first."""
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel() != 0
    if scores.size != labels.size:
        raise AfreqError(f"{scores.size} scores but {labels.size} labels; maps must be resized "
                         "to their masks' size before scoring")
    if not np.isfinite(scores).all():
        raise AfreqError("scores contain NaN or infinite values; the method's output is broken")
    if labels.all() or not labels.any():
        raise AfreqError("the labels hold one class only; AUROC and AP need normal and anomalous "
                         "samples")
    return merged_counts(np.sort(scores[~labels]), np.sort(scores[labels]))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR), starting at (0, 0)."""
    fps, tps, _ = binary_curve(scores, labels)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def binary_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``auroc``, ``ap`` and ``f1max`` from one sort (see the single-metric functions)."""
    fps, tps, _ = binary_curve(scores, labels)
    if fps.size == 1:
        warnings.warn("all scores are equal: AUROC is 0.5 by definition", stacklevel=2)
    fpr, tpr = np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]
    precision = tps / (tps + fps)
    return {
        "auroc": float(np.trapezoid(tpr, fpr)),
        "ap": float(np.sum(np.diff(tpr) * precision)),
        "f1max": float(np.max(2 * tps / (tps + fps + tps[-1]))),
    }


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; ties count half, as in scikit-learn)."""
    return binary_metrics(scores, labels)["auroc"]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Σ (R_n − R_{n−1}) P_n over distinct thresholds (scikit-learn's definition)."""
    return binary_metrics(scores, labels)["ap"]


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best F1 = 2·TP / (2·TP + FP + FN) over all thresholds."""
    return binary_metrics(scores, labels)["f1max"]
