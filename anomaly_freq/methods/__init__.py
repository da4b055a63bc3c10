"""In-tree methods; importing this package registers them."""

from anomaly_freq.methods import freqstat  # noqa: F401
from anomaly_freq.methods.base import AnomalyModule

__all__ = ["AnomalyModule"]
