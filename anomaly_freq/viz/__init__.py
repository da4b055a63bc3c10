"""Pictures of a run: heatmap overlays, ROC and PRO curves, and the run's report.md."""

from anomaly_freq.viz.report import write_report

__all__ = ["write_report"]
