"""One level of the Gaussian pyramid, exactly as cv2.pyrDown/cv2.pyrUp compute it.

pyrDown: 5×5 binomial blur (kernel [1 4 6 4 1]ᵀ[1 4 6 4 1]/256), reflect-101 border, keep the
even rows and columns. pyrUp: zeros inserted at the odd positions, then the same blur times 4.
DFD and OCR-GAN split an image into low = up(down(x)) and high = x − low.

Both run separably along each axis and compute only the outputs they keep: pyrUp's blur of a
zero-filled image is evaluated polyphase, (s[i−1] + 6 s[i] + s[i+1])/8 at even and
(s[i] + s[i+1])/2 at odd outputs, which is the same arithmetic at a quarter of the work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from anomaly_freq.errors import AfreqError


def _down_axis(padded: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """16× pyrDown along ``dim`` of an input reflect-padded by 2, giving ``size`` outputs."""
    def tap(i: int) -> torch.Tensor:
        index = [slice(None)] * padded.dim()
        index[dim] = slice(i, i + 2 * size - 1, 2)
        return padded[tuple(index)]

    out = tap(0) + tap(4)
    return out.add_(tap(1) + tap(3), alpha=4).add_(tap(2), alpha=6)


def _up_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """8× pyrUp along the negative axis ``dim``: n samples become 2n, interleaved."""
    n = x.shape[dim]
    # reflect-101 of the zero-inserted signal: s[-1] = s[1] on the left, s[n] = s[n-1] on the right
    padded = torch.cat([x.narrow(dim, 1, 1), x, x.narrow(dim, n - 1, 1)], dim)
    left, mid, right = (padded.narrow(dim, i, n) for i in range(3))
    even = (left + right).add_(mid, alpha=6)
    odd = (mid + right).mul_(4)
    return torch.stack([even, odd], dim).flatten(dim - 1, dim)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown: B×C×H×W → B×C×⌈H/2⌉×⌈W/2⌉ (H and W at least 3).

    >>> pyr_down(torch.rand(1, 3, 9, 8)).shape
    torch.Size([1, 3, 5, 4])
    """
    h, w = x.shape[-2:]
    if h < 3 or w < 3:
        raise AfreqError(f"pyr_down needs images of at least 3×3 pixels, got {h}×{w}")
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    rows = _down_axis(padded, -2, (h + 1) // 2)
    return _down_axis(rows, -1, (w + 1) // 2).mul_(1 / 256)


def pyr_up(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """cv2.pyrUp to ``size`` (default twice the input), which may be one less than double.

    >>> pyr_up(torch.rand(1, 3, 5, 4), (9, 8)).shape
    torch.Size([1, 3, 9, 8])
    """
    h, w = x.shape[-2:]
    out_h, out_w = size or (2 * h, 2 * w)
    if not (2 * h - 1 <= out_h <= 2 * h and 2 * w - 1 <= out_w <= 2 * w) or min(h, w) < 2:
        raise AfreqError(f"pyr_up cannot make {out_h}×{out_w} from {h}×{w}; the output must be "
                         "twice the input or one less, from at least 2×2 pixels")
    # OpenCV fills the full double-size image, then keeps the requested size
    # scaling the input instead of the 4× larger output is exact: 1/64 is a power of two
    return _up_axis(_up_axis(x * (1 / 64), -1), -2)[..., :out_h, :out_w]


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's fixed-point rounding of uint8 results: (sum + half) >> bits."""
    return torch.floor(x + 0.5)


def gaussian_pyramid_split(x: torch.Tensor, levels: int = 1, mode: str = "opencv",
                           saturate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) with low = up(down(x)) repeated ``levels`` times and high = x − low.

    ``levels`` > 1 applies up∘down again at full resolution, OCR-GAN's literal three-branch
    recursion (ocrgan.md §3). ``saturate=True`` reproduces OCR-GAN's uint8 code: x holds 0…255,
    every pyramid step is rounded as OpenCV rounds uint8 and high = max(x − low, 0), as
    cv2.subtract saturates on uint8; then ``low + high == x`` no longer holds.
    ``mode="kornia"`` uses kornia's interpolating pyrdown/pyrup instead (not OpenCV-exact).

    >>> x = torch.rand(2, 3, 32, 32)
    >>> low, high = gaussian_pyramid_split(x)
    >>> torch.allclose(low + high, x, atol=1e-6)
    True
    """
    if mode not in ("opencv", "kornia"):
        raise AfreqError(f"pyramid mode '{mode}' is unknown; valid: opencv, kornia")
    if levels < 1:
        raise AfreqError(f"pyramid levels={levels} must be at least 1")
    quantise: Callable[[torch.Tensor], torch.Tensor] = (
        _round_half_up if saturate else (lambda t: t))
    low = x
    for _ in range(levels):
        size = tuple(low.shape[-2:])
        if mode == "opencv":
            low = quantise(pyr_up(quantise(pyr_down(low)), size))
        else:
            from kornia.geometry.transform import pyrdown, pyrup

            low = F.interpolate(pyrup(pyrdown(low)), size=size, mode="bilinear")
    if saturate:
        return low, (x - low).clamp_min(0)
    return low, x - low
