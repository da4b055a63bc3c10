"""One level of the Gaussian pyramid, exactly as cv2.pyrDown/cv2.pyrUp compute it.

pyrDown: 5×5 binomial blur (kernel [1 4 6 4 1]ᵀ[1 4 6 4 1]/256), reflect-101 border, keep the
even rows and columns. pyrUp: zeros inserted at the odd positions, then the same blur times 4.
DFD and OCR-GAN split an image into low = up(down(x)) and high = x − low.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anomaly_freq.errors import AfreqError

_K1 = torch.tensor([1.0, 4, 6, 4, 1]) / 16


def _blur(x: torch.Tensor, gain: float = 1.0, stride: int = 1) -> torch.Tensor:
    """The separable 5×5 binomial blur with reflect-101 borders, optionally strided.

    Written as weighted sums of shifted slices: on CPU this is much faster than a depthwise
    convolution, and it is the same arithmetic.
    """
    h, w = x.shape[-2:]
    k = (_K1 * gain**0.5).tolist()
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    rows = sum(k[i] * padded[..., i:i + h:stride, :] for i in range(5))
    return sum(k[i] * rows[..., i:i + w:stride] for i in range(5))


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown: B×C×H×W → B×C×⌈H/2⌉×⌈W/2⌉.

    >>> pyr_down(torch.rand(1, 3, 9, 8)).shape
    torch.Size([1, 3, 5, 4])
    """
    return _blur(x, stride=2)


def pyr_up(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """cv2.pyrUp to ``size`` (default twice the input), which may be one less than double.

    >>> pyr_up(torch.rand(1, 3, 5, 4), (9, 8)).shape
    torch.Size([1, 3, 9, 8])
    """
    b, c, h, w = x.shape
    out_h, out_w = size or (2 * h, 2 * w)
    if not (2 * h - 1 <= out_h <= 2 * h and 2 * w - 1 <= out_w <= 2 * w):
        raise AfreqError(f"pyr_up cannot make {out_h}×{out_w} from {h}×{w}")
    # OpenCV fills the full double-size image, then keeps the requested size
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return _blur(up, gain=4.0)[..., :out_h, :out_w]


def gaussian_pyramid_split(x: torch.Tensor, levels: int = 1, mode: str = "opencv",
                           saturate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) with low = up(down(x)) repeated ``levels`` times and high = x − low.

    ``saturate=True`` reproduces OCR-GAN's uint8 code: x in 0…255, every pyramid step rounded
    to integers and high = max(x − low, 0), as cv2.subtract saturates on uint8; then
    ``low + high == x`` no longer holds. ``mode="kornia"`` uses kornia's interpolating
    pyrdown/pyrup instead (not OpenCV-exact).

    >>> x = torch.rand(2, 3, 32, 32)
    >>> low, high = gaussian_pyramid_split(x)
    >>> torch.allclose(low + high, x)
    True
    """
    if mode not in ("opencv", "kornia"):
        raise AfreqError(f"pyramid mode '{mode}' is unknown; valid: opencv, kornia")
    low = x
    quantise = torch.round if saturate else (lambda t: t)  # uint8 results at every step
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
