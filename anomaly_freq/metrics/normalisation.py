"""Score normalisations over a set (the options of ``eval.normalisation``).

Each one scales by statistics of the whole set it is given: on the test set that is
transductive, so the evaluator applies them only when a config asks for one by name.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-12  # a constant set has range zero; it maps to zero instead of dividing by zero


def minmax(values: np.ndarray) -> np.ndarray:
    """Min-max scaling over a set along its first axis: each column to [0, 1].

    >>> minmax(np.array([[1.0, 10.0], [3.0, 30.0], [2.0, 20.0]]))
    array([[0. , 0. ],
           [1. , 1. ],
           [0.5, 0.5]])
    """
    low, high = values.min(0), values.max(0)
    return (values - low) / np.maximum(high - low, _TINY)


def minmax_parts_summed(parts: list[np.ndarray]) -> list[np.ndarray]:
    """K×H×W map parts of a set of images → one H×W map each: every part j is min-max scaled
    by the lowest and highest value of part j over the whole set, then the K parts are summed.

    >>> maps = minmax_parts_summed([np.array([[[0.0, 2.0]], [[0.0, 1.0]]]),
    ...                             np.array([[[4.0, 4.0]], [[2.0, 0.0]]])])
    >>> [m.tolist() for m in maps]
    [[[0.0, 1.0]], [[2.0, 1.0]]]
    """
    k = parts[0].shape[0]
    low = [min(p[j].min() for p in parts) for j in range(k)]
    high = [max(p[j].max() for p in parts) for j in range(k)]
    return [sum((p[j] - low[j]) / max(high[j] - low[j], _TINY) for j in range(k))
            for p in parts]


def dfd_code_slip(parts: list[np.ndarray]) -> list[np.ndarray]:
    """DFD's official pixel normalisation over a set of K×H×W map parts, in closed form.

    The code meant to min-max scale each map by its own range, but its broadcasting turns
    every part j into a_j·P − c_j with a_j = mean_i 1/r_i and c_j = mean_i min_i/r_i over the
    set's maps i (r_i = max_i − min_i); the K results are averaged (dfd.md §10). Computed in
    float64, returned in the parts' dtype.

    >>> maps = dfd_code_slip([np.array([[[0.0, 2.0]]]), np.array([[[1.0, 2.0]]])])
    >>> [m.tolist() for m in maps]
    [[[-0.5, 1.0]], [[0.25, 1.0]]]
    """
    k = parts[0].shape[0]
    out = [np.zeros(p.shape[1:], np.float64) for p in parts]
    for j in range(k):
        low = np.array([p[j].min() for p in parts], np.float64)
        r = np.maximum(np.array([p[j].max() for p in parts], np.float64) - low, _TINY)
        a, c = (1 / r).mean(), (low / r).mean()
        for acc, p in zip(out, parts, strict=True):
            acc += a * p[j] - c
    return [(acc / k).astype(p.dtype) for acc, p in zip(out, parts, strict=True)]
