"""The frequency toolkit against NumPy and OpenCV references."""

import cv2
import numpy as np
import pytest
import torch

from anomaly_freq.errors import AfreqError
from anomaly_freq.freq import (
    butterworth_highpass,
    fft_filter,
    gaussian_pyramid_split,
    laplacian,
    radial_energy_spectrum,
    sobel,
    transfer_function,
)

RNG = np.random.default_rng(0)


def numpy_filter(image, kind, band, d0, order):
    """FAIR's formula on one H×W channel in float64 NumPy."""
    h, w = image.shape
    y, x = np.ogrid[:h, :w]
    dist = np.sqrt((y - h // 2) ** 2 + (x - w // 2) ** 2)
    if kind == "ideal":
        high = (dist > d0).astype(float)
    elif kind == "gaussian":
        high = 1 - np.exp(-(dist**2) / (2 * d0**2))
    else:
        high = 1 / (1 + (d0 / (dist + 1e-6)) ** (2 * order))
    transfer = high if band == "high" else 1 - high
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    return np.real(np.fft.ifft2(np.fft.ifftshift(spectrum * transfer)))


@pytest.mark.parametrize("kind", ["ideal", "gaussian", "butterworth"])
@pytest.mark.parametrize("band", ["high", "low"])
def test_fft_filter_matches_numpy(kind, band):
    images = RNG.random((2, 3, 256, 256)).astype(np.float32)
    ours = fft_filter(torch.from_numpy(images), kind, band, d0=30, order=2).numpy()
    for b in range(2):
        for c in range(3):
            ref = numpy_filter(images[b, c].astype(np.float64), kind, band, 30, 2)
            assert np.abs(ours[b, c] - ref).max() <= 1e-5


def test_butterworth_highpass_is_fairs_grey_input():
    image = RNG.random((256, 256, 3)).astype(np.float32)
    grey = cv2.cvtColor(image[..., ::-1].copy(), cv2.COLOR_BGR2GRAY).astype(np.float64)
    ours = butterworth_highpass(torch.from_numpy(image).permute(2, 0, 1)[None])[0, 0].numpy()
    assert np.abs(ours - numpy_filter(grey, "butterworth", "high", 30, 2)).max() <= 1e-5


def test_masks_are_cached_and_validated():
    a = transfer_function(64, 64, "gaussian", "low", 10.0)
    assert transfer_function(64, 64, "gaussian", "low", 10.0) is a
    with pytest.raises(AfreqError, match="filter kind 'box'"):
        fft_filter(torch.rand(1, 1, 8, 8), kind="box")


def test_filters_are_differentiable_and_keep_the_device():
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fft_filter(t, d0=5), (x,), eps=1e-6, atol=1e-5)
    low, high = gaussian_pyramid_split(x)
    (low.sum() + high.square().sum()).backward()
    assert x.grad is not None and low.device == x.device


@pytest.mark.parametrize("size", [(256, 256), (33, 31), (64, 47), (9, 8)])
def test_pyramid_split_matches_opencv(size):
    h, w = size
    image = RNG.random((h, w, 3)).astype(np.float32)
    low_ref = cv2.pyrUp(cv2.pyrDown(image), dstsize=(w, h))
    low, high = gaussian_pyramid_split(torch.from_numpy(image).permute(2, 0, 1)[None])
    low = low[0].permute(1, 2, 0).numpy()
    assert np.abs(low - low_ref).max() <= 1e-5
    assert np.abs(high[0].permute(1, 2, 0).numpy() - (image - low_ref)).max() <= 1e-5


def test_saturate_mode_matches_opencv_uint8():
    image = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    low_ref = cv2.pyrUp(cv2.pyrDown(image))
    high_ref = cv2.subtract(image, low_ref)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    low, high = gaussian_pyramid_split(x, saturate=True)
    low = low[0].permute(1, 2, 0).numpy()
    # OpenCV rounds in fixed point: an occasional one-level difference, never more
    assert np.abs(low - low_ref).max() <= 1 and (low != low_ref).mean() < 0.1
    assert (high >= 0).all()
    high = high[0].permute(1, 2, 0).numpy()
    assert np.abs(high - high_ref).max() <= 1 and (high != high_ref).mean() < 0.1


@pytest.mark.parametrize(("axes", "ksize"), [("xy", 3), ("x", 3), ("xy", 5)])
def test_sobel_matches_opencv(axes, ksize):
    grey = RNG.random((40, 36)).astype(np.float32)
    ours = sobel(torch.from_numpy(grey)[None, None], axes, ksize)[0].numpy()
    for i, axis in enumerate(axes):
        ref = cv2.Sobel(grey, cv2.CV_32F, int(axis == "x"), int(axis == "y"), ksize=ksize)
        assert np.abs(ours[i] - ref).max() <= 1e-4


def test_laplacian_matches_opencv():
    grey = RNG.random((40, 36)).astype(np.float32)
    ref = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    assert np.abs(laplacian(torch.from_numpy(grey)[None, None])[0, 0].numpy() - ref).max() <= 1e-5


def test_radial_spectrum_finds_a_single_frequency():
    y, x = np.mgrid[:64, :64]
    wave = np.cos(2 * np.pi * 10 * x / 64)
    curve = radial_energy_spectrum(torch.from_numpy(wave)[None, None])[0]
    assert int(curve[1:].argmax()) + 1 == 10
