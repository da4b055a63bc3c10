"""report.md for a run folder: metric table, the most and least anomalous test images, curves.

Heatmaps share one colour scale per category (the 1st–99th percentile of all its map values),
so a normal image looks calm and an anomalous one stands out; per-image scaling would make
every image look anomalous.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from anomaly_freq.bench.rundir import write_atomic  # noqa: E402
from anomaly_freq.metrics import functional as fn  # noqa: E402
from anomaly_freq.metrics.evaluator import Evaluator  # noqa: E402
from anomaly_freq.metrics.pro import pro_curve  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def _panel(row: dict, amap: np.ndarray, mask: np.ndarray, scale: tuple[float, float],
           path: Path) -> None:
    image = np.asarray(Image.open(row["path"]).convert("RGB").resize(amap.shape[::-1]))
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    axes[0].imshow(image)
    axes[1].imshow(mask, cmap="gray", vmin=0, vmax=1)
    axes[2].imshow(image)
    axes[2].imshow(amap, cmap="jet", alpha=0.5, vmin=scale[0], vmax=scale[1])
    for ax, title in zip(axes, ("image", "mask", f"score {row['pred_score']:.4g}"), strict=True):
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"{row['defect']} — {Path(row['path']).name}")
    _save(fig, path)


def _curve(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str, path: Path,
           limit: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(x, y)
    if limit is not None:
        ax.axvline(limit, linestyle="--", color="grey")
        ax.set_xlim(0, 1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    _save(fig, path)


def write_report(run_dir: Path, evaluator: Evaluator, metrics: dict[str, float],
                 n: int = 4) -> Path:
    """Write figures/ and report.md into ``run_dir``; return the report's path."""
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    maps = evaluator.final_maps()
    scores = evaluator.scores()
    order = np.argsort(-scores, kind="stable")
    values = np.concatenate([m.ravel() for m in maps])
    scale = (float(np.percentile(values, 1)), float(np.percentile(values, 99)))
    lines = [f"# Run report: {run_dir.name}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    labels = np.array([r["label"] for r in evaluator.rows])
    fpr, tpr = fn.roc_curve(scores, labels)
    _curve(fpr, tpr, "false positive rate", "true positive rate", "image ROC",
           figures / "roc.png")
    lines += ["", "## Curves", "", "![image ROC](figures/roc.png)"]
    if "pixel_aupro" in metrics:
        fpr, pro = pro_curve(maps, evaluator.masks)
        _curve(fpr, pro, "false positive rate", "per-region overlap", "PRO curve",
               figures / "pro.png", limit=evaluator.pro_limit)
        lines.append("![PRO curve](figures/pro.png)")
    for title, picks in (("Most anomalous", order[:n]), ("Least anomalous", order[::-1][:n])):
        lines += ["", f"## {title} test images", ""]
        for rank, i in enumerate(picks):
            name = f"{title.split()[0].lower()}_{rank}.png"
            _panel(evaluator.rows[i], maps[i], evaluator.masks[i], scale, figures / name)
            lines.append(f"![{evaluator.rows[i]['defect']}](figures/{name})")
    lines += ["", f"Heatmaps share one colour scale for the category: {scale[0]:.4g} to "
              f"{scale[1]:.4g} (1st to 99th percentile of all map values)."]
    report = run_dir / "report.md"
    write_atomic(report, "\n".join(lines) + "\n")
    return report
