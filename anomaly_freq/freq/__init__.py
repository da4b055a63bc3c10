"""Frequency toolkit: FFT filters, the OpenCV-exact Gaussian pyramid split, scipy-exact Gaussian
smoothing, spatial derivatives and radial spectra. Pure functions on B×C×H×W tensors: batched,
any device, differentiable."""

from anomaly_freq.freq.filters import (
    butterworth_highpass,
    fft_filter,
    laplacian,
    sobel,
    to_grey,
    transfer_function,
)
from anomaly_freq.freq.pyramid import gaussian_pyramid_split, pyr_down, pyr_up
from anomaly_freq.freq.smoothing import gaussian_kernel, gaussian_smooth
from anomaly_freq.freq.spectrum import radial_energy_spectrum

__all__ = [
    "butterworth_highpass", "fft_filter", "gaussian_kernel", "gaussian_pyramid_split",
    "gaussian_smooth", "laplacian", "pyr_down", "pyr_up", "radial_energy_spectrum", "sobel",
    "to_grey", "transfer_function",
]
