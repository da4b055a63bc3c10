"""The embedded synthetic dataset: procedurally drawn textures and objects with exact defect masks.

Generated deterministically from a seed into the MVTec AD layout, then read back by the same
reader as MVTec AD. Defects are drawn with geometric generators (strokes, ellipses, discs, wedges,
tinted blobs) that no method's training-time synthesis uses (those use Perlin noise and CutPaste),
so a method cannot score well merely by recognising its own augmentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from anomaly_freq.data.mvtec_layout import Sample, read_category
from anomaly_freq.data.sources import DatasetSource, cache_dir
from anomaly_freq.data.staging import build_once
from anomaly_freq.errors import AfreqError
from anomaly_freq.registry import register_dataset

GENERATOR_VERSION = 1


@dataclass
class Scene:
    """A normal image, plus what defects need to know about it (float32 H×W×3 in [0,1])."""

    image: np.ndarray
    background: np.ndarray
    object_mask: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Building blocks


def smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Gaussian-filtered white noise with correlation length ``scale`` px, rescaled to [0,1]."""
    freq = np.fft.fftfreq(size)
    radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) * np.exp(
        -radius2 * (np.pi * scale) ** 2 * 2
    )
    field = np.fft.ifft2(spectrum).real
    return (field - field.min()) / (np.ptp(field) + 1e-12)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _segment_distance(yy, xx, p0, p1) -> np.ndarray:
    d = np.subtract(p1, p0, dtype=np.float32)
    t = ((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / max(float(d @ d), 1e-6)
    t = np.clip(t, 0, 1)
    return np.hypot(yy - (p0[0] + t * d[0]), xx - (p0[1] + t * d[1]))


def _ellipse_radius(yy, xx, centre, axes, angle) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside the ellipse."""
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - centre[0], xx - centre[1]
    u, v = c * dx + s * dy, -s * dx + c * dy
    return np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2)


def _place(rng: np.random.Generator, size: int, region: np.ndarray | None, margin: float):
    """A random point inside ``region`` (or anywhere away from the border)."""
    if region is not None:
        ys, xs = np.nonzero(region)
        i = rng.integers(len(ys))
        return float(ys[i]), float(xs[i])
    return tuple(rng.uniform(margin, size - margin, 2))


# ---------------------------------------------------------------------------------------------
# Normal images


def _weave(rng: np.random.Generator, size: int) -> Scene:
    yy, xx = _grid(size)
    period = size / 16
    phase = rng.uniform(0, 2 * np.pi, 2)
    warp = rng.uniform(-0.03, 0.03)
    across = np.sin(2 * np.pi * (xx + warp * yy) / period + phase[0])
    along = np.sin(2 * np.pi * yy / period + phase[1])
    pattern = 0.5 + 0.25 * np.where(across * along > 0, across, along)
    base = np.array([0.62, 0.55, 0.42]) * rng.uniform(0.95, 1.05)
    fibre = 0.06 * (smooth_noise(rng, size, 1.0) - 0.5)
    image = pattern[..., None] * base * 1.4 + fibre[..., None]
    return Scene(np.clip(image, 0, 1).astype(np.float32), image.astype(np.float32))


def _granite(rng: np.random.Generator, size: int) -> Scene:
    coarse = smooth_noise(rng, size, size / 24)
    grain = smooth_noise(rng, size, 1.2)
    light = np.array([0.78, 0.74, 0.70])
    dark = np.array([0.35, 0.33, 0.36])
    mix = (0.6 * coarse + 0.4 * grain)[..., None]
    image = dark + (light - dark) * mix
    return Scene(np.clip(image, 0, 1).astype(np.float32), image.astype(np.float32))


def _object_scene(background: np.ndarray, obj: np.ndarray, mask: np.ndarray) -> Scene:
    image = np.where(mask[..., None], obj, background)
    return Scene(np.clip(image, 0, 1).astype(np.float32), background.astype(np.float32), mask)


def _washer(rng: np.random.Generator, size: int) -> Scene:
    yy, xx = _grid(size)
    cy, cx = size / 2 + rng.uniform(-3, 3, 2) * size / 256
    r = np.hypot(yy - cy, xx - cx)
    outer, inner = 0.36 * size, 0.16 * size
    mask = (r < outer) & (r > inner)
    background = 0.12 + 0.04 * smooth_noise(rng, size, 2.0)[..., None] * np.ones(3)
    theta = np.arctan2(yy - cy, xx - cx)
    shade = 0.62 + 0.12 * np.cos(theta - rng.uniform(-0.2, 0.2)) + 0.08 * (r - inner) / outer
    grooves = 0.05 * np.sin(2 * np.pi * r / (0.025 * size))
    metal = (shade + grooves)[..., None] * np.array([0.95, 0.96, 1.0])
    return _object_scene(background, metal, mask)


def _chip(rng: np.random.Generator, size: int) -> Scene:
    yy, xx = _grid(size)
    cy, cx = size / 2 + rng.uniform(-3, 3, 2) * size / 256
    half = 0.22 * size
    body = (np.abs(yy - cy) < half) & (np.abs(xx - cx) < half * 1.3)
    pins = np.zeros_like(body)
    pitch = 2 * half / 6
    for k in range(6):
        py = cy - half + pitch * (k + 0.5)
        row = np.abs(yy - py) < pitch * 0.25
        pins |= row & (np.abs(xx - cx) < half * 1.3 + 0.08 * size) & ~body
    board = np.array([0.10, 0.38, 0.18]) + 0.05 * (smooth_noise(rng, size, 3.0)[..., None] - 0.5)
    obj = np.where(body[..., None], np.array([0.16, 0.16, 0.18]), np.array([0.85, 0.82, 0.70]))
    dot = np.hypot(yy - (cy - half * 0.6), xx - (cx - half * 0.9)) < 0.03 * size
    obj = np.where(dot[..., None], np.array([0.8, 0.8, 0.8]), obj)
    return _object_scene(board, obj, body | pins)


# ---------------------------------------------------------------------------------------------
# Defects: each returns the defective image and the exact mask of the pixels it changed


def _scratch(rng, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    size = scene.image.shape[0]
    yy, xx = _grid(size)
    point = np.array(_place(rng, size, scene.object_mask, 0.2 * size))
    dist = np.full((size, size), np.inf, dtype=np.float32)
    for _ in range(rng.integers(2, 4)):
        step = rng.uniform(0.06, 0.12) * size * np.array([np.sin(a := rng.uniform(0, 2 * np.pi)),
                                                          np.cos(a)])
        nxt = np.clip(point + step, 2, size - 3)
        dist = np.minimum(dist, _segment_distance(yy, xx, point, nxt))
        point = nxt
    mask = dist <= rng.uniform(0.8, 1.6) * size / 256
    if scene.object_mask is not None:
        mask &= scene.object_mask
    colour = np.array([0.95, 0.95, 0.92]) if rng.random() < 0.5 else np.array([0.05, 0.05, 0.05])
    return np.where(mask[..., None], colour, scene.image), mask


def _stain(rng, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    size = scene.image.shape[0]
    yy, xx = _grid(size)
    centre = _place(rng, size, scene.object_mask, 0.2 * size)
    axes = rng.uniform(0.04, 0.09, 2) * size
    r = _ellipse_radius(yy, xx, centre, axes, rng.uniform(0, np.pi))
    mask = r < 1
    if scene.object_mask is not None:
        mask &= scene.object_mask
    alpha = np.where(mask, 0.35 + 0.4 * np.clip((1 - r) * 2.5, 0, 1), 0)[..., None]
    tint = np.array([0.30, 0.20, 0.08])
    return scene.image * (1 - alpha) + tint * alpha, mask


def _hole(rng, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    size = scene.image.shape[0]
    yy, xx = _grid(size)
    centre = _place(rng, size, scene.object_mask, 0.2 * size)
    radius = rng.uniform(0.025, 0.05) * size
    r = np.hypot(yy - centre[0], xx - centre[1]) / radius
    mask = r < 1
    rim = np.clip((r - 0.7) / 0.3, 0, 1)[..., None]
    inside = 0.03 + 0.25 * rim
    return np.where(mask[..., None], inside * np.ones(3), scene.image), mask


def _colour_shift(rng, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    size = scene.image.shape[0]
    yy, xx = _grid(size)
    centre = _place(rng, size, scene.object_mask, 0.2 * size)
    radius = rng.uniform(0.06, 0.11) * size
    blob = smooth_noise(rng, size, size / 40)
    r = np.hypot(yy - centre[0], xx - centre[1]) / radius
    mask = (r + 0.5 * (blob - 0.5)) < 1
    if scene.object_mask is not None:
        mask &= scene.object_mask
    gains = np.array([1.35, 0.75, 0.6])[rng.permutation(3)]
    shifted = np.clip(scene.image * gains + 0.08 * (gains - 1), 0, 1)
    return np.where(mask[..., None], shifted, scene.image), mask


def _missing_part(rng, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    size = scene.image.shape[0]
    yy, xx = _grid(size)
    ys, xs = np.nonzero(scene.object_mask)
    cy, cx = ys.mean(), xs.mean()
    start = rng.uniform(-np.pi, np.pi)
    width = rng.uniform(0.25, 0.6)
    theta = np.angle(np.exp(1j * (np.arctan2(yy - cy, xx - cx) - start)))
    mask = (theta > 0) & (theta < width) & scene.object_mask
    return np.where(mask[..., None], scene.background, scene.image), mask


Renderer = Callable[[np.random.Generator, int], Scene]
Defect = Callable[[np.random.Generator, Scene], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Category:
    group: str
    render: Renderer
    defects: dict[str, Defect]


_SURFACE_DEFECTS = {"scratch": _scratch, "stain": _stain, "colour_shift": _colour_shift}
CATEGORIES: dict[str, Category] = {
    "weave": Category("texture", _weave, {**_SURFACE_DEFECTS, "hole": _hole}),
    "granite": Category("texture", _granite, {**_SURFACE_DEFECTS, "hole": _hole}),
    "washer": Category("object", _washer, {**_SURFACE_DEFECTS, "missing_part": _missing_part}),
    "chip": Category("object", _chip, {**_SURFACE_DEFECTS, "missing_part": _missing_part}),
}


# ---------------------------------------------------------------------------------------------
# Writing the MVTec AD layout


@dataclass(frozen=True)
class SyntheticSpec:
    seed: int = 0
    size: int = 256
    n_train: int = 60
    n_test_good: int = 20
    n_test_per_defect: int = 5
    defect_strength: float = 1.0  # see `subtle`

    def __post_init__(self) -> None:
        if not 0 < self.defect_strength <= 1:
            raise AfreqError(f"dataset.defect_strength={self.defect_strength} must be in (0, 1]")

    def folder_name(self) -> str:
        strength = "" if self.defect_strength == 1 else f"-strength{self.defect_strength:g}"
        return (
            f"v{GENERATOR_VERSION}-seed{self.seed}-{self.size}px-{self.n_train}"
            f"-{self.n_test_good}-{self.n_test_per_defect}{strength}"
        )


def subtle(image: np.ndarray, normal: np.ndarray, strength: float) -> np.ndarray:
    """Move each pixel only ``strength`` of the way from the normal image to the defective one:
    the same mask, a fainter defect (1 leaves the defect as drawn)."""
    return image if strength == 1 else normal + np.float32(strength) * (image - normal)


def category_rng(spec: SyntheticSpec, category: str, split: str) -> np.random.Generator:
    index = list(CATEGORIES).index(category)
    return np.random.default_rng([spec.seed, index, ["train", "test"].index(split)])


def _to_uint8(image: np.ndarray) -> np.ndarray:
    # float32 throughout, so equal pixel values always quantise to equal bytes
    return np.round(np.clip(image.astype(np.float32), 0, 1) * np.float32(255)).astype(np.uint8)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def write_category(root: Path, category: str, spec: SyntheticSpec) -> None:
    """Write one category in the MVTec AD layout under ``root/category``."""
    cat = CATEGORIES[category]
    out = root / category
    rng = category_rng(spec, category, "train")
    for i in range(spec.n_train):
        _save(out / "train" / "good" / f"{i:03d}.png", _to_uint8(cat.render(rng, spec.size).image))
    rng = category_rng(spec, category, "test")
    for i in range(spec.n_test_good):
        _save(out / "test" / "good" / f"{i:03d}.png", _to_uint8(cat.render(rng, spec.size).image))
    for defect, make in cat.defects.items():
        for i in range(spec.n_test_per_defect):
            scene = cat.render(rng, spec.size)
            image, mask = make(rng, scene)
            image = subtle(image, scene.image, spec.defect_strength)
            _save(out / "test" / defect / f"{i:03d}.png", _to_uint8(image))
            _save(out / "ground_truth" / defect / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)


def ensure_generated(root: Path, spec: SyntheticSpec) -> Path:
    """Generate the set under ``root/<spec folder>`` once; return that folder."""

    def build(staging: Path) -> None:
        for category in CATEGORIES:
            write_category(staging, category, spec)

    return build_once(root / spec.folder_name(), build, f"generator v{GENERATOR_VERSION}")


@register_dataset("synthetic")
class SyntheticSource(DatasetSource):
    """The embedded procedural set, generated on first use under the cache folder."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        d = cfg.dataset
        self.spec = SyntheticSpec(
            seed=d.seed, size=d.size, n_train=d.n_train, n_test_good=d.n_test_good,
            n_test_per_defect=d.n_test_per_defect, defect_strength=d.defect_strength,
        )

    def root(self) -> Path:
        base = Path(self.cfg.dataset.root) if self.cfg.dataset.root else cache_dir()
        return ensure_generated(base / "synthetic", self.spec)

    def categories(self) -> list[str]:
        return list(CATEGORIES)

    def group(self, category: str) -> str:
        return CATEGORIES[category].group

    def samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        self.check_category(category)
        return read_category(self.root() / category)
