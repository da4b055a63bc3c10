"""CutPaste in the two forms the methods use, and Cutout."""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF

from anomaly_freq.synth.rng import Seed, as_generator, randint, uniform


def cutpaste_small(image: torch.Tensor, generator: Seed,
                   area: tuple[float, float] = (0.02, 0.15), aspect: float = 0.3,
                   jitter: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """OCR-GAN's CutPaste: a patch of U(area) of the image, aspect U(aspect, 1/aspect), colour
    jittered by ±``jitter``, cut from and pasted into the same image at uniform positions.

    >>> out, m = cutpaste_small(torch.rand(3, 64, 64), torch.Generator().manual_seed(0))
    >>> 0 < m.mean() < 0.2
    tensor(True)
    """
    generator = as_generator(generator)
    _, h, w = image.shape
    a = uniform(generator, *area) * h * w
    ratio = uniform(generator, aspect, 1 / aspect)
    pw = min(w - 1, max(1, round(math.sqrt(a * ratio))))
    ph = min(h - 1, max(1, round(math.sqrt(a / ratio))))
    sy, sx = randint(generator, 0, h - ph + 1), randint(generator, 0, w - pw + 1)
    patch = image[:, sy:sy + ph, sx:sx + pw]
    patch = TF.adjust_brightness(patch, uniform(generator, 1 - jitter, 1 + jitter))
    patch = TF.adjust_contrast(patch, uniform(generator, 1 - jitter, 1 + jitter))
    patch = TF.adjust_saturation(patch, uniform(generator, 1 - jitter, 1 + jitter))
    patch = TF.adjust_hue(patch, uniform(generator, -jitter, jitter))
    ty, tx = randint(generator, 0, h - ph + 1), randint(generator, 0, w - pw + 1)
    out, mask = image.clone(), torch.zeros(1, h, w)
    out[:, ty:ty + ph, tx:tx + pw] = patch
    mask[:, ty:ty + ph, tx:tx + pw] = 1
    changed = (out != image).any(0, keepdim=True).float()
    return out, mask * changed


def cutout(image: torch.Tensor, generator: Seed,
           side: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """One black square of ``side`` px, centred uniformly, clipped at the border.

    >>> out, m = cutout(torch.ones(3, 64, 64), 0)
    >>> bool((out[:, m[0] > 0] == 0).all()), 0 < int(m.sum()) <= 400
    (True, True)
    """
    generator = as_generator(generator)
    _, h, w = image.shape
    cy, cx = randint(generator, 0, h), randint(generator, 0, w)
    y0, y1 = max(0, cy - side // 2), min(h, cy + side // 2)
    x0, x1 = max(0, cx - side // 2), min(w, cx + side // 2)
    out, mask = image.clone(), torch.zeros(1, h, w)
    out[:, y0:y1, x0:x1] = 0
    mask[:, y0:y1, x0:x1] = 1
    return out, mask


def large_cutpaste(image: torch.Tensor, generator: Seed,
                   faithful: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """FAIR's large CutPaste: a patch of side U{0.8..0.9}·S pasted back into the same image.

    ``faithful=False`` (default) does what the paper describes: the patch is cut fully inside
    the image, rotated by U(−6°, 6°) about its centre with reflected borders, and pasted at a
    random position, so it covers 64–81 % of the image with real texture. ``faithful=True`` does
    what the official code does (fair.md §3.3): the slice is clipped at the border, rotated by an
    integer number of *radians* in {−6..5} about the centre of its top-left pixel with
    ``cv2.warpAffine`` (bilinear, black outside; `rotate_like_cv2`), its height and width drawn
    apart, which leaves most of the pasted rectangle black.

    >>> out, m = large_cutpaste(torch.rand(3, 128, 128), 0)
    >>> 0.6 < float(m.mean()) < 0.85
    True
    """
    generator = as_generator(generator)
    _, h, w = image.shape
    lo, hi = round(0.8 * h), round(0.9 * h)
    if faithful:
        # the code's draws: top, height, left, width (both sides from 80–90 % of the height),
        # each side made even, the slice clipped at the border
        top, side_h = randint(generator, 0, h), _even(randint(generator, lo, hi))
        left, side_w = randint(generator, 0, w), _even(randint(generator, lo, hi))
        patch = image[:, top:top + side_h, left:left + side_w]
        patch = rotate_like_cv2(patch, randint(generator, -6, 6))
    else:
        side_h = side_w = _even(randint(generator, lo, hi))
        top, left = randint(generator, 0, h - side_h + 1), randint(generator, 0, w - side_w + 1)
        patch = image[:, top:top + side_h, left:left + side_w]
        pad = side_h // 4
        padded = torch.nn.functional.pad(patch[None], (pad, pad, pad, pad), mode="reflect")[0]
        rotated = TF.rotate(padded, uniform(generator, -6, 6), TF.InterpolationMode.BILINEAR)
        patch = rotated[:, pad:pad + side_h, pad:pad + side_w]
    ph, pw = patch.shape[-2:]
    ty, tx = randint(generator, 1, h - ph - 1), randint(generator, 1, w - pw - 1)
    out, mask = image.clone(), torch.zeros(1, h, w)
    out[:, ty:ty + ph, tx:tx + pw] = patch
    mask[:, ty:ty + ph, tx:tx + pw] = 1
    return out, mask


def _even(side: int) -> int:
    return side - side % 2


def rotate_like_cv2(patch: torch.Tensor, radians: float) -> torch.Tensor:
    """``cv2.warpAffine(patch, [[cos, −sin, 0], [sin, cos, 0]], (w, h))`` of a C×H×W float
    patch: rotation about the centre of pixel (0, 0), bilinear, zero outside (OpenCV ≥ 4.11
    interpolates at exact coordinates; older releases rounded them to 1/32 pixel).

    >>> float(rotate_like_cv2(torch.ones(1, 4, 4), 0.0).sum())
    16.0
    """
    _, h, w = patch.shape
    # the code's np.float32 matrix, inverted as warpAffine inverts it, coordinates in float64
    c, s = (float(torch.tensor(v, dtype=torch.float32)) for v in (math.cos(radians),
                                                                   math.sin(radians)))
    det = c * c + s * s
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    sx, sy = (c * xs + s * ys) / det, (-s * xs + c * ys) / det
    x0, y0 = sx.floor(), sy.floor()
    fx, fy = (sx - x0).to(patch.dtype), (sy - y0).to(patch.dtype)
    x0, y0 = x0.long(), y0.long()
    out = torch.zeros_like(patch)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            x, y = x0 + dx, y0 + dy
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            values = patch[:, y.clamp(0, h - 1), x.clamp(0, w - 1)] * inside.to(patch.dtype)
            out = out + values * (wy * wx)
    return out
