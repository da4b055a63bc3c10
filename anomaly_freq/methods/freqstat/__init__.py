"""freqstat: per-pixel statistics of high-frequency energy, the plugin example."""

from anomaly_freq.methods.freqstat.model import FreqStat

__all__ = ["FreqStat"]
