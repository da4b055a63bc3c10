"""report.md for a run folder: metric table, the most and least anomalous test images, curves.

Heatmaps share one colour scale per category (the 1st–99th percentile of all its maps as
scored, i.e. after the evaluator's normalisation if one was chosen), so a normal image looks
calm and an anomalous one stands out; per-image scaling would make every image look anomalous.
Figures use matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from anomaly_freq.bench.rundir import write_atomic
from anomaly_freq.metrics import functional as fn
from anomaly_freq.metrics.evaluator import Evaluator
from anomaly_freq.metrics.pro import pro_curve

_MAX_PLOT_POINTS = 5000


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG atomically (a temporary file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _panel(row: dict, score: float, amap: np.ndarray, mask: np.ndarray,
           scale: tuple[float, float], path: Path) -> None:
    with Image.open(row["path"]) as raw:
        image = np.asarray(raw.convert("RGB").resize(amap.shape[::-1]))
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 3)
    axes[0].imshow(image)
    axes[1].imshow(mask, cmap="gray", vmin=0, vmax=1)
    axes[2].imshow(image)
    axes[2].imshow(amap, cmap="jet", alpha=0.5, vmin=scale[0], vmax=scale[1])
    for ax, title in zip(axes, ("image", "mask", f"heatmap, score {score:.4g}"), strict=True):
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"{row['defect']} — {Path(row['path']).name}")
    save_figure(fig, path)


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``_MAX_PLOT_POINTS`` of the curve's own points, evenly spread, ends kept."""
    if x.size <= _MAX_PLOT_POINTS:
        return x, y
    keep = np.linspace(0, x.size - 1, _MAX_PLOT_POINTS).astype(int)
    return x[keep], y[keep]


def _curves(series: dict[str, tuple[np.ndarray, np.ndarray]], ylabel: str, title: str,
            path: Path, limit: float | None = None) -> None:
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    for name, (x, y) in series.items():
        ax.plot(*_thin(x, y), label=name)
    if limit is not None:
        ax.axvline(limit, linestyle="--", color="grey", label=f"FPR limit {limit:g}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel=ylabel, title=title)
    ax.legend(loc="lower right")
    save_figure(fig, path)


def _test_curve(table: Path, path: Path) -> None:
    """The test-set monitor's metrics against the epoch (the papers' model-selection curve)."""
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    epochs = [int(r["epoch"]) for r in rows]
    for metric in ("image_auroc", "pixel_auroc", "pixel_aupro"):
        if metric in rows[0]:
            ax.plot(epochs, [float(r[metric]) for r in rows], marker="o", label=metric)
    ax.set(xlabel="epoch", ylabel="test metric", title="Test set during training")
    ax.legend(loc="lower right")
    save_figure(fig, path)


def category_scale(maps: list[np.ndarray], samples: int = 2_000_000) -> tuple[float, float]:
    """1st and 99th percentile of all map values (an even subsample of at most ~``samples``)."""
    step = max(1, sum(m.size for m in maps) // samples)
    values = np.concatenate([m.ravel()[::step] for m in maps])
    low, high = np.percentile(values, [1, 99])
    return float(low), float(high)


def write_report(run_dir: Path, evaluator: Evaluator, metrics: dict[str, float],
                 n: int = 4) -> Path:
    """Write figures/ and report.md into ``run_dir``; return the report's path."""
    run_dir = Path(run_dir)
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    maps, scores = evaluator.final_maps(), evaluator.scores()
    labels = np.array([r["label"] for r in evaluator.rows])
    protocol = evaluator.protocol()
    lines = [f"# Run report: {run_dir.name}", "",
             f"Evaluated at resolution {protocol['eval_resolution']}, AUPRO variant "
             f"{protocol['pro_variant']} to FPR {protocol['pro_integration_limit']:g}, score "
             f"normalisation {evaluator.normalisation}.", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    roc = {"image": fn.roc_curve(scores, labels)}
    if "pixel_auroc" in metrics:
        roc["pixel"] = fn.roc_curve(np.concatenate([m.ravel() for m in maps]),
                                    np.concatenate([m.ravel() for m in evaluator.masks]))
    _curves(roc, "true positive rate", "ROC", figures / "roc.png")
    lines += ["", "## Curves", "", "![ROC curves](figures/roc.png)"]
    if "pixel_aupro" in metrics:
        _curves({"exact PRO": pro_curve(maps, evaluator.masks)}, "per-region overlap",
                "PRO curve", figures / "pro.png", limit=evaluator.pro_limit)
        lines.append("![PRO curve](figures/pro.png)")
    if (run_dir / "test_curve.csv").exists():
        _test_curve(run_dir / "test_curve.csv", figures / "test_curve.png")
        lines += ["", "Scored on the test set during training (`eval.test_every_n_epochs`); the "
                  "metrics above are the last epoch's, `best_on_test_*` the papers' choice.", "",
                  "![test metrics by epoch](figures/test_curve.png)"]
    order = np.argsort(-scores, kind="stable")
    scale = category_scale(maps)
    for title, picks in (("Most anomalous", order[:n]), ("Least anomalous", order[::-1][:n])):
        lines += ["", f"## {title} test images", ""]
        for rank, i in enumerate(picks):
            name = f"{title.split()[0].lower()}_{rank}.png"
            _panel(evaluator.rows[i], scores[i], maps[i], evaluator.masks[i], scale,
                   figures / name)
            lines.append(f"![{evaluator.rows[i]['defect']}](figures/{name})")
    lines += ["", f"Image | mask | heatmap overlay. Heatmaps share one colour scale for the "
              f"category: {scale[0]:.4g} to {scale[1]:.4g} (1st to 99th percentile of all its "
              "map values), not a per-image scale."]
    report = run_dir / "report.md"
    write_atomic(report, "\n".join(lines) + "\n")
    return report
