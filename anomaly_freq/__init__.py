"""anomaly_freq: frequency-domain industrial visual anomaly detection benchmark."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("anomaly_freq")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
