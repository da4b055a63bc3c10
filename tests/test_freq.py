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


def test_filter_matches_numpy_on_odd_sizes():
    image = RNG.random((33, 47))
    ours = fft_filter(torch.from_numpy(image)[None, None], "gaussian", "low", d0=6)[0, 0].numpy()
    assert np.abs(ours - numpy_filter(image, "gaussian", "low", 6, 2)).max() <= 1e-10


OPERATIONS = {
    "fft_filter": lambda t: fft_filter(t, "butterworth", "high", d0=4),
    "butterworth_highpass": butterworth_highpass,
    "pyramid_low": lambda t: gaussian_pyramid_split(t)[0],
    "pyramid_high_2_levels": lambda t: gaussian_pyramid_split(t, levels=2)[1],
    "sobel": sobel,
    "laplacian": laplacian,
    "radial_energy_spectrum": radial_energy_spectrum,
}


@pytest.mark.parametrize("name", OPERATIONS)
def test_differentiable_keeping_device_and_dtype(name):
    op = OPERATIONS[name]
    x = torch.rand(2, 3, 12, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,), fast_mode=True)
    out = op(x.detach())
    assert out.device == x.device and out.dtype == torch.float64
    # no CPU-only tensor and no data-dependent shape on the way: runs on any device
    assert op(torch.empty(2, 3, 12, 10, device="meta")).device.type == "meta"


@pytest.mark.parametrize("size", [(256, 256), (33, 31), (64, 47), (9, 8)])
def test_pyramid_split_matches_opencv(size):
    h, w = size
    image = RNG.random((h, w, 3)).astype(np.float32)
    low_ref = cv2.pyrUp(cv2.pyrDown(image), dstsize=(w, h))
    low, high = gaussian_pyramid_split(torch.from_numpy(image).permute(2, 0, 1)[None])
    low = low[0].permute(1, 2, 0).numpy()
    assert np.abs(low - low_ref).max() <= 1e-5
    assert np.abs(high[0].permute(1, 2, 0).numpy() - (image - low_ref)).max() <= 1e-5


@pytest.mark.parametrize("size", [(256, 256), (33, 31)])
def test_saturate_mode_matches_opencv_uint8_exactly(size):
    h, w = size
    image = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    low_ref = cv2.pyrUp(cv2.pyrDown(image), dstsize=(w, h))
    high_ref = cv2.subtract(image, low_ref)  # saturates at 0 on uint8
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    low, high = gaussian_pyramid_split(x, saturate=True)
    assert np.array_equal(low[0].permute(1, 2, 0).numpy(), low_ref)
    assert np.array_equal(high[0].permute(1, 2, 0).numpy(), high_ref)


def test_pyramid_levels_and_errors():
    image = RNG.random((40, 30, 3)).astype(np.float32)
    once = cv2.pyrUp(cv2.pyrDown(image), dstsize=(30, 40))
    twice = cv2.pyrUp(cv2.pyrDown(once), dstsize=(30, 40))
    low, high = gaussian_pyramid_split(torch.from_numpy(image).permute(2, 0, 1)[None], levels=2)
    assert np.abs(low[0].permute(1, 2, 0).numpy() - twice).max() <= 1e-5
    assert torch.allclose(low + high, torch.from_numpy(image).permute(2, 0, 1)[None], atol=1e-6)
    with pytest.raises(AfreqError, match="pyramid mode 'cv2'"):
        gaussian_pyramid_split(torch.rand(1, 1, 8, 8), mode="cv2")
    with pytest.raises(AfreqError, match="at least 3×3"):
        gaussian_pyramid_split(torch.rand(1, 1, 2, 8))


def test_kornia_mode_keeps_the_shape_and_differs_from_opencv():
    x = torch.rand(1, 3, 33, 32)
    low, high = gaussian_pyramid_split(x, mode="kornia")
    assert low.shape == x.shape and torch.allclose(low + high, x, atol=1e-6)
    assert not torch.allclose(low, gaussian_pyramid_split(x)[0], atol=1e-3)


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


def test_radial_spectrum_matches_numpy():
    images = RNG.random((2, 3, 32, 40))
    power = (np.abs(np.fft.fftshift(np.fft.fft2(images), axes=(-2, -1))) ** 2).mean(1)
    y, x = np.ogrid[:32, :40]
    radius = np.floor(np.sqrt((y - 16) ** 2 + (x - 20) ** 2)).astype(int)
    ref = np.stack([[p[radius == r].mean() for r in range(16)] for p in power])
    ours = radial_energy_spectrum(torch.from_numpy(images)).numpy()
    assert np.allclose(ours, ref, rtol=1e-10)


def test_radial_spectrum_finds_a_single_frequency():
    y, x = np.mgrid[:64, :64]
    wave = np.cos(2 * np.pi * 10 * x / 64)
    curve = radial_energy_spectrum(torch.from_numpy(wave)[None, None])[0]
    assert int(curve[1:].argmax()) + 1 == 10


def test_plot_spectra_writes_a_png(tmp_path):
    from anomaly_freq.viz.spectrum import plot_spectra

    curves = {"normal": radial_energy_spectrum(torch.rand(4, 3, 32, 32)),
              "anomalous": radial_energy_spectrum(torch.rand(3, 3, 32, 32))[0]}
    plot_spectra(curves, tmp_path / "spectra.png")
    assert (tmp_path / "spectra.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["spectra.png"]  # no temporary left
