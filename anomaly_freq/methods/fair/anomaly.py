"""FAIR's loss and anomaly function (fair.md §6 and §8).

- Loss: MSE + (1 − SSIM), SSIM as DRAEM computes it (11×11 Gaussian window, σ = 1.5, zero
  padding, mean of the SSIM map) with the dynamic range fixed to 1 — *not* kornia's
  ``ssim_loss``, which returns (1 − SSIM)/2.
- Anomaly map: 1 − MSGMS(restored, original) over two scales (Prewitt gradients / 3, c = 0.0026,
  2×2 average-pooling, bilinear upsampling), averaged over the colour channels, plus
  k · ((a_r − a)² + (b_r − b)²) in CIELAB, then a 21×21 mean filter with zero padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab
from kornia.filters import box_blur

GMS_C = 0.0026
COLOR_WEIGHT = 3e-4
EPS = 1e-12


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g).to(like)
    return window.expand(channels, 1, size, size)


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of two B×C×H×W batches, DRAEM's way (per channel, zero-padded window).

    >>> x = torch.rand(1, 3, 32, 32)
    >>> round(float(ssim(x, x)), 6)
    1.0
    """
    # not kornia's ssim: it pads by reflection and builds its window in the input's precision
    channels = x.shape[1]
    window = _gaussian_window(window_size, sigma, channels, x)
    pad = window_size // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, padding=pad, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


SSIM_RANGES = ("fixed", "code")


def code_data_range(prediction: torch.Tensor) -> float:
    """The SSIM dynamic range the official code picks from the prediction at every call:
    (255 if its max > 128 else 1) − (−1 if its min < −0.5 else 0).

    >>> code_data_range(torch.tensor([0.2, 0.9])), code_data_range(torch.tensor([-0.6, 0.9]))
    (1.0, 2.0)
    """
    top = 255.0 if float(prediction.max()) > 128 else 1.0
    return top - (-1.0 if float(prediction.min()) < -0.5 else 0.0)


def restoration_loss(restored: torch.Tensor, target: torch.Tensor,
                     ssim_range: str = "fixed") -> torch.Tensor:
    """L = MSE(restored, target) + (1 − SSIM(restored, target)), weights 1 : 1; SSIM's dynamic
    range fixed to 1, or ``ssim_range="code"``: the official code's rule (`code_data_range`)."""
    data_range = code_data_range(restored) if ssim_range == "code" else 1.0
    return F.mse_loss(restored, target) + (1 - ssim(restored, target, data_range=data_range))


def _prewitt(channels: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    kx = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=like.dtype, device=like.device) / 3
    return kx.expand(channels, 1, 3, 3), kx.T.expand(channels, 1, 3, 3)


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Per-channel Prewitt gradient magnitude sqrt(gx² + gy² + 1e-12), zero padding 1."""
    channels = x.shape[1]  # kornia has no Prewitt operator
    kx, ky = _prewitt(channels, x)
    gx = F.conv2d(x, kx, padding=1, groups=channels)
    gy = F.conv2d(x, ky, padding=1, groups=channels)
    return torch.sqrt(gx**2 + gy**2 + EPS)


def gms(x: torch.Tensor, y: torch.Tensor, c: float = GMS_C) -> torch.Tensor:
    """Gradient magnitude similarity map, per channel: (2·g1·g2 + c) / (g1² + g2² + c)."""
    g1, g2 = gradient_magnitude(x), gradient_magnitude(y)
    return (2 * g1 * g2 + c) / (g1**2 + g2**2 + c + EPS)


def msgms_anomaly(restored: torch.Tensor, original: torch.Tensor, scales: int = 2,
                  c: float = GMS_C) -> torch.Tensor:
    """B×1×H×W: channel mean of 1 − (average GMS over ``scales`` levels of a 2×2 avg pyramid).

    Coarser levels are upsampled bilinearly (align_corners=False) to full size before averaging.
    """
    size = original.shape[-2:]
    total = torch.zeros_like(original)
    x, y = restored, original
    for level in range(scales):
        if level:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        similarity = gms(x, y, c)
        if level:
            similarity = F.interpolate(similarity, size=size, mode="bilinear",
                                       align_corners=False)
        total = total + similarity
    return (1 - total / scales).mean(dim=1, keepdim=True)


def color_anomaly(restored: torch.Tensor, original: torch.Tensor,
                  bgr_quirk: bool = True) -> torch.Tensor:
    """B×1×H×W: (a_r − a)² + (b_r − b)² in CIELAB (kornia: sRGB, D65); L is ignored.

    ``bgr_quirk=True`` reproduces the official code, which hands BGR tensors to an RGB→Lab
    conversion: our RGB tensors are flipped to BGR first (fair.md §8, §12 #7).
    """
    if bgr_quirk:
        restored, original = restored.flip(1), original.flip(1)
    lab_r, lab_o = rgb_to_lab(restored), rgb_to_lab(original)
    return ((lab_r[:, 1:] - lab_o[:, 1:]) ** 2).sum(dim=1, keepdim=True)


def mean_filter(x: torch.Tensor, size: int = 21) -> torch.Tensor:
    """``size``×``size`` box mean with zero padding (borders are attenuated, as in the code)."""
    if size <= 1:
        return x
    return box_blur(x, (size, size), border_type="constant", separable=False)


def anomaly_map(restored: torch.Tensor, original: torch.Tensor, *, msgms_term: bool = True,
                color_term: bool = True, color_weight: float = COLOR_WEIGHT,
                bgr_quirk: bool = True, smooth: int = 21, scales: int = 2,
                gms_c: float = GMS_C) -> torch.Tensor:
    """FAIR's B×1×H×W anomaly map from the restored and the original [0,1] RGB images.

    The restored image is used as it comes out of the network (not clipped), as in the code.
    """
    amap = torch.zeros_like(original[:, :1])
    if msgms_term:
        amap = amap + msgms_anomaly(restored, original, scales, gms_c)
    if color_term:
        amap = amap + color_weight * color_anomaly(restored, original, bgr_quirk)
    return mean_filter(amap, smooth)
