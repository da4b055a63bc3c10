"""Per-region overlap (PRO) curves and their area up to a false-positive-rate limit.

Three definitions, because the papers used three:

- ``exact`` (default): the official MVTec AD evaluation. Every distinct score is a threshold:
  one global descending sort, the FPR and the mean region overlap as cumulative sums, the last
  point of each run of tied scores kept, (0, 0) prepended, trapezoids up to the limit with linear
  interpolation there, divided by the limit.
- ``mvtec3d``: the MVTec 3D-AD reference code (FAIR's evaluation): ``k`` thresholds taken at
  evenly spaced positions of the sorted normal-pixel scores, so equidistant in FPR.
- ``cflow``: the CFlow code (DFD's evaluation): ``k`` thresholds evenly spaced between the
  smallest and largest score; points with FPR below the limit are kept and their FPR min-max
  rescaled to [0, 1] before integration (so the result is not divided by the limit).

Regions are 8-connected components of each image's ground truth.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anomaly_freq.errors import AfreqError

VARIANTS = ("exact", "mvtec3d", "cflow")
_EIGHT = np.ones((3, 3), dtype=bool)


def label_regions(masks: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Flat region labels over all images (0 = normal pixel; ids unique across images)."""
    flat, offset = [], 0
    for mask in masks:
        labels, count = ndimage.label(mask.astype(bool), structure=_EIGHT, output=np.int32)
        labels[labels > 0] += offset
        flat.append(labels.ravel())
        offset += count
    return np.concatenate(flat), offset


def _check(maps: list[np.ndarray], masks: list[np.ndarray]) -> None:
    for i, (m, g) in enumerate(zip(maps, masks, strict=True)):
        if m.shape != g.shape:
            raise AfreqError(f"anomaly map {i} is {m.shape} but its mask is {g.shape}")


def pro_curve(maps: list[np.ndarray], masks: list[np.ndarray],
              limit: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact curve: (FPR, PRO) at every distinct threshold, from (0, 0) upwards.

    With ``limit``, only the part up to the first point past FPR = limit is computed: a linear
    partition finds the score where that happens, and only the pixels at or above it are sorted.
    """
    _check(maps, masks)
    labels, regions = label_regions(masks)
    if regions == 0:
        raise AfreqError("no anomalous region in the masks: AUPRO needs at least one")
    scores = np.concatenate([m.ravel() for m in maps])
    normal = labels == 0
    n_normal = int(normal.sum())
    sizes = np.bincount(labels, minlength=regions + 1).astype(np.float64)
    if limit is not None and limit < 1:
        needed = min(n_normal, int(np.ceil(limit * n_normal)) + 1)
        normal_scores = scores[normal]
        cut = np.partition(normal_scores, n_normal - needed)[n_normal - needed]
        keep = np.flatnonzero(scores >= cut)  # all ties at the cut: the last run is complete
        scores, labels = scores[keep], labels[keep]
    # ties may come in any order: only the last point of each run of equal scores is kept
    order = np.argsort(scores)[::-1]
    labels = labels[order]
    fprs = np.cumsum(labels == 0, dtype=np.float64) / n_normal
    pros = np.cumsum((1.0 / sizes)[labels] * (labels > 0)) / regions
    keep = np.r_[np.diff(scores[order]) != 0, True]
    fprs, pros = np.minimum(fprs[keep], 1.0), np.minimum(pros[keep], 1.0)
    return np.r_[0.0, fprs], np.r_[0.0, pros]


def area_to_limit(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area of y(x) for x ≤ limit, interpolating linearly at the limit."""
    inside = x <= limit
    area = float(np.trapezoid(y[inside], x[inside]))
    last = np.flatnonzero(inside)[-1]
    if x[last] < limit and last + 1 < x.size:
        x0, x1, y0, y1 = x[last], x[last + 1], y[last], y[last + 1]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_limit) * (limit - x0)
    return area


def aupro(maps: list[np.ndarray], masks: list[np.ndarray], limit: float = 0.3,
          variant: str = "exact", steps: int | None = None) -> float:
    """Normalised area under the PRO curve up to FPR ``limit`` with the named definition."""
    if variant == "exact":
        fpr, pro = pro_curve(maps, masks, limit)
        return area_to_limit(fpr, pro, limit) / limit
    if variant == "mvtec3d":
        fpr, pro = mvtec3d_curve(maps, masks, steps or 5000)
        return area_to_limit(fpr, pro, limit) / limit
    if variant == "cflow":
        return cflow_aupro(maps, masks, limit, steps or 200)
    raise AfreqError(f"metrics.pro_variant={variant} is unknown; valid: {', '.join(VARIANTS)}")


def _region_scores(maps, masks):
    _check(maps, masks)
    labels, regions = label_regions(masks)
    if regions == 0:
        raise AfreqError("no anomalous region in the masks: AUPRO needs at least one")
    scores = np.concatenate([m.ravel() for m in maps])
    return scores, labels, regions


def mvtec3d_curve(maps: list[np.ndarray], masks: list[np.ndarray],
                  steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at ``steps`` thresholds equidistant in FPR (MVTec 3D-AD reference code)."""
    scores, labels, regions = _region_scores(maps, masks)
    normal_sorted = np.sort(scores[labels == 0])
    positions = np.linspace(0, normal_sorted.size - 1, steps).astype(int)
    thresholds = normal_sorted[positions]
    fpr = 1.0 - (positions + 1) / normal_sorted.size
    order = np.argsort(labels[labels > 0], kind="stable")
    region_ids = labels[labels > 0][order]
    region_scores = scores[labels > 0][order]
    starts = np.searchsorted(region_ids, np.arange(1, regions + 1))
    ends = np.r_[starts[1:], region_ids.size]
    overlap = np.zeros(steps)
    for start, end in zip(starts, ends, strict=True):
        values = np.sort(region_scores[start:end])
        above = values.size - np.searchsorted(values, thresholds, side="right")
        overlap += above / values.size
    return fpr[::-1], (overlap / regions)[::-1]


def cflow_aupro(maps: list[np.ndarray], masks: list[np.ndarray], limit: float,
                steps: int) -> float:
    """CFlow's approximation: equidistant score thresholds, FPR rescaled within the limit."""
    scores, labels, regions = _region_scores(maps, masks)
    low, high = scores.min(), scores.max()
    thresholds = np.arange(low, high, (high - low) / steps) if high > low else np.array([low])
    normal = labels == 0
    sizes = np.bincount(labels, minlength=regions + 1)[1:]
    fprs, pros = [], []
    for t in thresholds:
        hit = scores > t
        fprs.append((hit & normal).sum() / normal.sum())
        per_region = np.bincount(labels[hit], minlength=regions + 1)[1:]
        pros.append(np.mean(per_region / sizes))
    fprs, pros = np.asarray(fprs), np.asarray(pros)
    kept = fprs < limit
    fprs, pros = fprs[kept], pros[kept]
    if fprs.size < 2 or fprs.max() == fprs.min():
        return float("nan")
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    # thresholds rise, so FPR falls: reversed, the points run along increasing FPR
    return float(np.trapezoid(pros[::-1], fprs[::-1]))
