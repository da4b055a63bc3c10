"""DFD: dual-path frequency discriminators for few-shot anomaly detection."""

from anomaly_freq.methods.dfd.model import DFD

__all__ = ["DFD"]
