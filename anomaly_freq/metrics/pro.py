"""Per-region overlap (PRO) curves and their area up to a false-positive-rate limit.

Three definitions, because the papers used three:

- ``exact`` (default): the official MVTec AD evaluation. Every distinct score is a threshold:
  one global descending order of all pixels, the FPR and the mean region overlap as cumulative
  sums, the last point of each run of tied scores kept, (0, 0) prepended, trapezoids up to the
  limit with linear interpolation there, divided by the limit.
- ``mvtec3d``: the MVTec 3D-AD reference code (FAIR's evaluation): ``k`` thresholds taken at
  evenly spaced positions of the sorted normal-pixel scores, so equidistant in FPR.
- ``cflow``: the CFlow code (DFD's evaluation): ``k`` thresholds evenly spaced between the
  smallest and largest score; points with FPR below the limit are kept and their FPR min-max
  rescaled to [0, 1] before integration (so the result is not divided by the limit).

Regions are 8-connected components of each image's ground truth (any non-zero mask pixel).
The mean overlap over regions equals the sum, over region pixels above a threshold, of
1/|region|, divided by the number of regions; all three variants use that form, so none loops
over thresholds or regions.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from anomaly_freq.errors import AfreqError
from anomaly_freq.metrics.functional import merged_counts

VARIANTS = ("exact", "mvtec3d", "cflow")
DEFAULT_STEPS = {"mvtec3d": 5000, "cflow": 200}
_EIGHT = np.ones((3, 3), dtype=bool)


class Pixels(NamedTuple):
    normal: np.ndarray  # scores of all normal pixels
    anomalous: np.ndarray  # scores of all region pixels
    weights: np.ndarray  # 1/|region| for each region pixel
    regions: int


def split_pixels(maps: list[np.ndarray], masks: list[np.ndarray]) -> Pixels:
    """Normal-pixel scores, region-pixel scores with their weights, and the region count."""
    normal, anomalous, ids, regions = [], [], [], 0
    for i, (amap, mask) in enumerate(zip(maps, masks, strict=True)):
        amap, mask = np.asarray(amap), np.asarray(mask) != 0
        if amap.shape != mask.shape:
            raise AfreqError(f"anomaly map {i} is {amap.shape} but its mask is {mask.shape}; "
                             "resize maps to the mask size before scoring")
        if not np.isfinite(amap).all():
            raise AfreqError(f"anomaly map {i} contains NaN or infinite values")
        if not mask.any():
            normal.append(amap.ravel())
            continue
        labeled, count = ndimage.label(mask, structure=_EIGHT)
        normal.append(amap[~mask])
        anomalous.append(amap[mask])
        ids.append(labeled[mask] + regions)
        regions += count
    if regions == 0:
        raise AfreqError("no anomalous region in the masks: AUPRO needs at least one")
    normal_scores = np.concatenate(normal)
    if normal_scores.size == 0:
        raise AfreqError("the masks cover every pixel: AUPRO needs normal pixels too")
    ids = np.concatenate(ids)
    weights = 1.0 / np.bincount(ids)[ids]
    return Pixels(normal_scores, np.concatenate(anomalous), weights, regions)


def pro_curve(maps: list[np.ndarray], masks: list[np.ndarray],
              limit: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact curve: (FPR, PRO) at every distinct threshold, from (0, 0) upwards.

    With ``limit``, only the part up to the first point past FPR = limit is computed.
    """
    pixels = split_pixels(maps, masks)
    normal, anomalous, weights = pixels.normal, pixels.anomalous, pixels.weights
    n_normal = normal.size
    if limit is not None and limit < 1:
        # the score where FPR first passes the limit; pixels below it cannot change the area
        first = n_normal - min(n_normal, int(np.ceil(limit * n_normal)) + 1)
        split = np.partition(normal, first)
        cut = split[first]
        ties = np.count_nonzero(split[:first] == cut)  # keep the whole last run of ties
        normal = np.concatenate([split[first:], np.full(ties, cut)]) if ties else split[first:]
        kept = anomalous >= cut
        anomalous, weights = anomalous[kept], weights[kept]
    else:
        normal = normal.copy()
    normal.sort()
    order = np.argsort(anomalous)
    fps, gains, _ = merged_counts(normal, anomalous[order], weights[order])
    return _from_origin(fps / n_normal), _from_origin(gains / pixels.regions)


def _from_origin(values: np.ndarray) -> np.ndarray:
    """0 followed by ``values`` clipped to at most 1."""
    out = np.empty(values.size + 1)
    out[0] = 0.0
    np.minimum(values, 1.0, out=out[1:])
    return out


def area_to_limit(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area of y(x) for x ≤ limit (x non-decreasing), interpolated at the limit."""
    last = int(np.searchsorted(x, limit, side="right")) - 1  # x rises: x[:last + 1] ≤ limit
    area = float(np.trapezoid(y[: last + 1], x[: last + 1]))
    if x[last] < limit and last + 1 < x.size:
        x0, x1, y0, y1 = x[last], x[last + 1], y[last], y[last + 1]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_limit) * (limit - x0)
    return area


def aupro(maps: list[np.ndarray], masks: list[np.ndarray], limit: float = 0.3,
          variant: str = "exact", steps: int | None = None) -> float:
    """Normalised area under the PRO curve up to FPR ``limit`` with the named definition.

    ``steps`` is the threshold count of ``mvtec3d`` (default 5000) and ``cflow`` (200).
    """
    check_variant(variant)
    if not 0 < limit <= 1:
        raise AfreqError(f"PRO integration limit {limit} must be in (0, 1]")
    if variant == "exact":
        fpr, pro = pro_curve(maps, masks, limit)
        return area_to_limit(fpr, pro, limit) / limit
    steps = steps or DEFAULT_STEPS[variant]
    if variant == "mvtec3d":
        fpr, pro = mvtec3d_curve(maps, masks, steps)
        return area_to_limit(fpr, pro, limit) / limit
    return cflow_aupro(maps, masks, limit, steps)


def check_variant(variant: str) -> None:
    """Raise when ``variant`` is not one of `VARIANTS`."""
    if variant not in VARIANTS:
        raise AfreqError(f"metrics.pro_variant={variant} is unknown; valid: {', '.join(VARIANTS)}")


def _overlap_above(pixels: Pixels, thresholds: np.ndarray) -> np.ndarray:
    """Mean region overlap with ``score > t`` for each threshold t."""
    order = np.argsort(pixels.anomalous)
    scores = pixels.anomalous[order]
    tail = np.r_[np.cumsum(pixels.weights[order][::-1])[::-1], 0.0]  # tail[i] = Σ weights[i:]
    return tail[np.searchsorted(scores, thresholds, side="right")] / pixels.regions


def mvtec3d_curve(maps: list[np.ndarray], masks: list[np.ndarray],
                  steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at ``steps`` thresholds equidistant in FPR (MVTec 3D-AD reference code)."""
    pixels = split_pixels(maps, masks)
    normal = np.sort(pixels.normal)
    positions = np.linspace(0, normal.size - 1, steps).astype(int)
    fpr = 1.0 - (positions + 1) / normal.size
    pro = _overlap_above(pixels, normal[positions])
    return fpr[::-1], pro[::-1]


def cflow_aupro(maps: list[np.ndarray], masks: list[np.ndarray], limit: float,
                steps: int) -> float:
    """CFlow's approximation: equidistant score thresholds, FPR rescaled within the limit.

    NaN when fewer than two thresholds with distinct FPR fall below the limit (as in CFlow).
    """
    pixels = split_pixels(maps, masks)
    low = min(pixels.normal.min(), pixels.anomalous.min())
    high = max(pixels.normal.max(), pixels.anomalous.max())
    thresholds = np.arange(low, high, (high - low) / steps) if high > low else np.array([low])
    normal = np.sort(pixels.normal)
    fprs = (normal.size - np.searchsorted(normal, thresholds, side="right")) / normal.size
    pros = _overlap_above(pixels, thresholds)
    kept = fprs < limit
    fprs, pros = fprs[kept], pros[kept]
    if fprs.size < 2 or fprs.max() == fprs.min():
        return float("nan")
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    # thresholds rise, so FPR falls: reversed, the points run along increasing FPR
    return float(np.trapezoid(pros[::-1], fprs[::-1]))
