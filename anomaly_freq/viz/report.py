"""report.md for a run folder: metric table, curves, the most and least anomalous test images.

Heatmaps share one colour scale per category (the 1st–99th percentile of all its maps as
scored, i.e. after the evaluator's normalisation if one was chosen), so a normal image looks
calm and an anomalous one stands out; per-image scaling would make every image look anomalous.
Each figure comes from a function that returns it, titled with the method, category and metric,
and `save_figure` writes it. Figures use matplotlib's object API with the Agg canvas (no pyplot
state, no display needed).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from PIL import Image

from anomaly_freq.files import replacing, write_atomic
from anomaly_freq.metrics import functional as fn
from anomaly_freq.metrics.evaluator import Evaluator
from anomaly_freq.metrics.pro import pro_curve

_MAX_PLOT_POINTS = 5000


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG atomically (a temporary file in the same folder, then rename)."""
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")


def draw_overlay(ax: Axes, image: np.ndarray, amap: np.ndarray,
                 scale: tuple[float, float]) -> AxesImage:
    """``amap`` in colour over ``image`` (stretched to it), coloured from ``scale[0]`` (coldest)
    to ``scale[1]`` (hottest); returns the map's layer, for a colour bar."""
    height, width = image.shape[:2]
    ax.imshow(image)
    heat = ax.imshow(amap, cmap="jet", alpha=0.5, vmin=scale[0], vmax=scale[1],
                     extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    ax.axis("off")
    return heat


def add_colour_bar(fig: Figure, heat: AxesImage, ax: Axes) -> None:
    """A colour bar for the heatmap layer ``heat``, beside ``ax``, drawn opaque."""
    bar = fig.colorbar(heat, ax=ax, label="anomaly score", fraction=0.046, pad=0.04)
    bar.solids.set(alpha=1)


def panel_figure(image: np.ndarray, amap: np.ndarray, mask: np.ndarray,
                 scale: tuple[float, float], title: str) -> Figure:
    """Image, heatmap overlay with its colour bar, and ground-truth mask, side by side."""
    fig = Figure(figsize=(10, 3.4))
    axes = fig.subplots(1, 3)
    axes[0].imshow(image)
    heat = draw_overlay(axes[1], image, amap, scale)
    add_colour_bar(fig, heat, axes[1])
    axes[2].imshow(mask, cmap="gray", vmin=0, vmax=1)
    for ax, name in zip(axes, ("image", "anomaly map", "ground-truth mask"), strict=True):
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    return fig


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``_MAX_PLOT_POINTS`` of the curve's own points, evenly spread, ends kept."""
    if x.size <= _MAX_PLOT_POINTS:
        return x, y
    keep = np.linspace(0, x.size - 1, _MAX_PLOT_POINTS).astype(int)
    return x[keep], y[keep]


def _curve_axes(fig: Figure, ylabel: str, title: str) -> Axes:
    ax = fig.subplots()
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel=ylabel, title=title)
    return ax


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> Figure:
    """ROC curves, one per ``name: (fpr, tpr, auroc)``, the AUROC in the legend."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = _curve_axes(fig, "true positive rate", title)
    for name, (fpr, tpr, auroc) in curves.items():
        ax.plot(*_thin(fpr, tpr), label=f"{name} (AUROC {auroc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance (AUROC 0.5)")
    ax.legend(loc="lower right")
    return fig


def pro_figure(fpr: np.ndarray, pro: np.ndarray, aupro: float, variant: str, limit: float,
               title: str) -> Figure:
    """The exact per-region-overlap curve, with the run's AUPRO (its variant named when it is
    not the exact one) and the FPR limit it integrates to."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = _curve_axes(fig, "per-region overlap", title)
    named = "" if variant == "exact" else f", {variant} variant"
    ax.plot(*_thin(fpr, pro), label=f"PRO (AUPRO {aupro:.3f}{named})")
    ax.axvline(limit, linestyle="--", color="grey", label=f"FPR limit {limit:g}")
    ax.legend(loc="lower right")
    return fig


def epoch_curve_figure(rows: list[dict[str, str]], title: str) -> Figure:
    """The test-set monitor's metrics against the epoch (the papers' model-selection curve),
    each metric's best value in the legend."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    epochs = [int(r["epoch"]) for r in rows]
    for metric in ("image_auroc", "pixel_auroc", "pixel_aupro"):
        if metric in rows[0]:
            values = [float(r[metric]) for r in rows]
            ax.plot(epochs, values, marker="o", label=f"{metric} (best {max(values):.3f})")
    ax.set(xlabel="epoch", ylabel="test metric", title=title)
    ax.legend(loc="lower right")
    return fig


def map_percentiles(maps: list[np.ndarray], percentiles: tuple[float, float],
                    samples: int = 2_000_000) -> tuple[float, float]:
    """Two percentiles of all map values (an even subsample of at most ~``samples``)."""
    step = max(1, sum(m.size for m in maps) // samples)
    values = np.concatenate([m.ravel()[::step] for m in maps])
    low, high = np.percentile(values, percentiles)
    return float(low), float(high)


def write_report(run_dir: Path, evaluator: Evaluator, metrics: dict[str, float],
                 n: int = 4, method: str | None = None) -> Path:
    """Write figures/ and report.md into ``run_dir``; return the report's path. ``method``
    (the preset's name) goes into the titles beside the category."""
    run_dir = Path(run_dir)
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    maps, scores = evaluator.final_maps(), evaluator.scores()
    labels = np.array([r["label"] for r in evaluator.rows])
    who = " / ".join(filter(None, (method, evaluator.rows[0]["category"])))
    protocol = evaluator.protocol()
    lines = [f"# Run report: {who} ({run_dir.name})", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    lines += ["", f"Evaluated at resolution {protocol['eval_resolution']}, AUPRO variant "
              f"{protocol['pro_variant']} to FPR {protocol['pro_integration_limit']:g}, score "
              f"normalisation {evaluator.normalisation}."]
    roc = {"image": (*fn.roc_curve(scores, labels), metrics["image_auroc"])}
    title = f"{who}: ROC, image AUROC {metrics['image_auroc']:.3f}"
    if "pixel_auroc" in metrics:
        roc["pixel"] = (*fn.roc_curve(np.concatenate([m.ravel() for m in maps]),
                                      np.concatenate([m.ravel() for m in evaluator.masks])),
                        metrics["pixel_auroc"])
        title += f", pixel {metrics['pixel_auroc']:.3f}"
    save_figure(roc_figure(roc, title), figures / "roc.png")
    lines += ["", "## Curves", "", "![ROC curves](figures/roc.png)"]
    if "pixel_aupro" in metrics:
        aupro = metrics["pixel_aupro"]
        save_figure(pro_figure(*pro_curve(maps, evaluator.masks), aupro, evaluator.pro_variant,
                               evaluator.pro_limit, f"{who}: PRO, AUPRO {aupro:.3f}"),
                    figures / "pro.png")
        lines.append("![PRO curve](figures/pro.png)")
    if (run_dir / "test_curve.csv").exists():
        with (run_dir / "test_curve.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        save_figure(epoch_curve_figure(rows, f"{who}: test set during training"),
                    figures / "test_curve.png")
        lines += ["", "Scored on the test set during training (`eval.test_every_n_epochs`); the "
                  "metrics above are the last epoch's, `best_on_test_*` the papers' choice.", "",
                  "![test metrics by epoch](figures/test_curve.png)"]
    order = np.argsort(-scores, kind="stable")
    scale = map_percentiles(maps, (1, 99))
    for title, picks in (("Most anomalous", order[:n]), ("Least anomalous", order[::-1][:n])):
        lines += ["", f"## {title} test images", ""]
        for rank, i in enumerate(picks):
            row, name = evaluator.rows[i], f"{title.split()[0].lower()}_{rank}.png"
            with Image.open(row["path"]) as raw:
                image = np.asarray(raw.convert("RGB").resize(maps[i].shape[::-1]))
            caption = (f"{who}: {title.lower()} #{rank + 1}, {row['defect']} "
                       f"{Path(row['path']).name}, score {scores[i]:.4g}")
            save_figure(panel_figure(image, maps[i], evaluator.masks[i], scale, caption),
                        figures / name)
            lines.append(f"![{row['defect']}](figures/{name})")
    lines += ["", f"Image | anomaly-map overlay | ground-truth mask. Heatmaps share one colour "
              f"scale for the category: {scale[0]:.4g} to {scale[1]:.4g} (1st to 99th percentile "
              "of all its map values), not a per-image scale."]
    report = run_dir / "report.md"
    write_atomic(report, "\n".join(lines) + "\n")
    return report
