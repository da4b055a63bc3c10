"""FAIR: frequency-aware image restoration with a Butterworth high-pass input."""

from anomaly_freq.methods.fair.model import FAIR

__all__ = ["FAIR"]
