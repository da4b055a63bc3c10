"""In-tree methods; importing this package registers them."""

from anomaly_freq.contract import AnomalyModule
from anomaly_freq.methods import (
    dfd,  # noqa: F401
    fair,  # noqa: F401
    freqstat,  # noqa: F401
    ocrgan,  # noqa: F401
)

__all__ = ["AnomalyModule"]
