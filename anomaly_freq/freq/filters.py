"""Centred-spectrum FFT filters (FAIR's convention) and spatial-derivative inputs.

D(u, v) is the distance from the DC term of the ``fftshift``-ed spectrum, at index (H//2, W//2),
which is FAIR's (M/2, N/2) for even sizes. ``d0`` is in DFT bins of the input size.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from kornia.color import rgb_to_grayscale
from kornia.filters import filter2d

from anomaly_freq.errors import AfreqError

KINDS = ("ideal", "gaussian", "butterworth")
BANDS = ("high", "low")


@lru_cache(maxsize=64)
def _transfer(h: int, w: int, kind: str, band: str, d0: float, order: int, device: str,
              dtype: torch.dtype, for_rfft: bool = False) -> torch.Tensor:
    y = torch.arange(h, dtype=torch.float64).view(h, 1) - h // 2
    x = torch.arange(w, dtype=torch.float64).view(1, w) - w // 2
    dist = torch.sqrt(x**2 + y**2)
    if kind == "ideal":
        high = (dist > d0).double()
    elif kind == "gaussian":
        high = 1 - torch.exp(-(dist**2) / (2 * d0**2))
    else:  # butterworth; the epsilon is FAIR's, it keeps the DC gain finite (≈1e-30)
        high = 1 / (1 + (d0 / (dist + 1e-6)) ** (2 * order))
    transfer = high if band == "high" else 1 - high
    if for_rfft:  # unshifted (DC first), and only the W//2 + 1 columns that rfft2 keeps
        transfer = torch.fft.ifftshift(transfer)[:, : w // 2 + 1].contiguous()
    return transfer.to(device=device, dtype=dtype)


def _check(kind: str, band: str, d0: float) -> None:
    if kind not in KINDS:
        raise AfreqError(f"filter kind '{kind}' is unknown; valid: {', '.join(KINDS)}")
    if band not in BANDS:
        raise AfreqError(f"filter band '{band}' is unknown; valid: high, low")
    if d0 <= 0:
        raise AfreqError(f"filter cutoff d0={d0} must be positive")


def transfer_function(h: int, w: int, kind: str = "butterworth", band: str = "high",
                      d0: float = 30.0, order: int = 2, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The H×W transfer function, cached per (size, kind, band, d0, order, device, dtype).

    Ideal high-pass: 1 where D > d0. Gaussian high-pass: 1 − exp(−D²/2d0²). Butterworth
    high-pass: 1 / (1 + (d0/D)^(2·order)). Each low-pass is one minus its high-pass.

    >>> transfer_function(4, 4, "ideal", "high", d0=1.0)[2]
    tensor([1., 0., 0., 0.])
    """
    _check(kind, band, d0)
    return _transfer(h, w, kind, band, float(d0), int(order), str(device), dtype)


def fft_filter(x: torch.Tensor, kind: str = "butterworth", band: str = "high", d0: float = 30.0,
               order: int = 2) -> torch.Tensor:
    """Filter B×C×H×W images in the centred spectrum; returns the real part, same shape.

    >>> x = torch.rand(2, 3, 64, 64)
    >>> hi, lo = fft_filter(x, band="high", d0=8), fft_filter(x, band="low", d0=8)
    >>> torch.allclose(hi + lo, x, atol=1e-5)
    True
    """
    _check(kind, band, d0)
    h, w = x.shape[-2:]
    real = x if x.is_floating_point() else x.float()
    # ifftshift(fftshift(F) · H) = F · ifftshift(H), and H is real with H(−u, −v) = H(u, v), so
    # the result is real and the half spectrum of rfft2 carries all of it
    transfer = _transfer(h, w, kind, band, float(d0), int(order), str(real.device), real.dtype,
                         for_rfft=True)
    return torch.fft.irfft2(torch.fft.rfft2(real) * transfer, s=(h, w))


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """B×3×H×W RGB → B×1×H×W with OpenCV's weights 0.299 R + 0.587 G + 0.114 B.

    >>> to_grey(torch.ones(1, 3, 2, 2)).shape
    torch.Size([1, 1, 2, 2])
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise AfreqError(f"grey conversion needs B×3×H×W RGB images, got shape {tuple(x.shape)}")
    return rgb_to_grayscale(x)


def butterworth_highpass(x: torch.Tensor, d0: float = 30.0, order: int = 2,
                         grey: bool = True) -> torch.Tensor:
    """FAIR's input: grey conversion, then a 2nd-order Butterworth high-pass at D0 = 30 bins of
    a 256×256 image (fair.md §4.2; scale d0 with the size). ``grey=False`` filters each channel.

    >>> butterworth_highpass(torch.rand(2, 3, 256, 256)).shape
    torch.Size([2, 1, 256, 256])
    """
    return fft_filter(to_grey(x) if grey else x, "butterworth", "high", d0, order)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate each channel with ``kernel`` using OpenCV's default reflect-101 border."""
    return filter2d(x, kernel[None], border_type="reflect")


_SMOOTH = {3: torch.tensor([1.0, 2, 1]), 5: torch.tensor([1.0, 4, 6, 4, 1])}
_DERIV = {3: torch.tensor([-1.0, 0, 1]), 5: torch.tensor([-1.0, -2, 0, 2, 1])}


def sobel(x: torch.Tensor, axes: str = "xy", ksize: int = 3) -> torch.Tensor:
    """Sobel derivatives as cv2.Sobel(dx/dy=1, ksize) computes them, stacked as channels.

    ``axes="xy"`` gives [gx, gy] per input channel; ``"x"`` gives gx only.

    >>> sobel(torch.rand(1, 1, 16, 16)).shape
    torch.Size([1, 2, 16, 16])
    """
    # not kornia's sobel/spatial_gradient: they replicate the border and have no 5×5 first order
    if ksize not in _SMOOTH or not axes or set(axes) - {"x", "y"}:
        raise AfreqError(f"sobel needs ksize 3 or 5 and axes x, y or xy (got {ksize}, {axes})")
    kx = torch.outer(_SMOOTH[ksize], _DERIV[ksize])
    kernels = {"x": kx, "y": kx.T}
    return torch.cat([_depthwise(x, kernels[a]) for a in axes], dim=1)


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """cv2.Laplacian(ksize=1): the 4-neighbour Laplacian.

    >>> float(laplacian(torch.ones(1, 1, 5, 5)).abs().max())
    0.0
    """
    # kornia's laplacian(kernel_size=3) is the 8-neighbour kernel, not OpenCV's ksize=1
    return _depthwise(x, torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]))
