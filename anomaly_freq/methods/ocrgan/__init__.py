"""OCR-GAN: frequency-decoupled two-branch reconstruction GAN with channel selection."""

from anomaly_freq.methods.ocrgan.model import OCRGAN, decouple
from anomaly_freq.methods.ocrgan.networks import ChannelSelection, Discriminator, TwoBranchUNet

__all__ = ["OCRGAN", "ChannelSelection", "Discriminator", "TwoBranchUNet", "decouple"]
