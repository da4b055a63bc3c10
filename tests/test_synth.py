"""Anomaly synthesis: binary masks, determinism under a seed, changes only inside the mask."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_freq.errors import AfreqError
from anomaly_freq.synth import (
    TextureSource,
    as_generator,
    augment_texture,
    cutout,
    cutpaste_small,
    feature_noise,
    large_cutpaste,
    otsu_foreground,
    perlin_mask,
    perlin_texture_anomaly,
)
from anomaly_freq.synth.cutpaste import rotate_like_cv2
from anomaly_freq.synth.foreground import grey_levels, otsu_threshold


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def image(seed=0, size=64):
    return torch.rand(3, size, size, generator=gen(seed))


def test_perlin_masks_are_binary_and_usually_non_empty():
    masks = [perlin_mask((64, 64), s) for s in range(100)]
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in masks)
    # DRAEM's threshold of 0.5 leaves about 5 % of the draws empty (measured: 95 % non-empty)
    assert 0.85 <= sum(bool(m.any()) for m in masks) / len(masks) < 1
    assert 0.01 < torch.stack(masks).mean() < 0.2
    assert not perlin_mask((64, 64), 0, threshold=2.0).any()  # above the noise's range


def perlin_with_random_texture(img, seed):
    g = as_generator(seed)
    return perlin_texture_anomaly(img, torch.rand(img.shape, generator=g), g)


SYNTHESISERS = {
    "perlin": perlin_with_random_texture,
    "cutpaste_small": cutpaste_small,
    "cutout": cutout,
    "large_cutpaste": large_cutpaste,
    "large_cutpaste_faithful": lambda img, g: large_cutpaste(img, g, faithful=True),
}


@pytest.mark.parametrize("name", SYNTHESISERS)
def test_deterministic_and_only_inside_the_mask(name):
    make = SYNTHESISERS[name]
    for seed in range(5):
        img = image(seed)
        out_a, mask_a = make(img, gen(seed))
        out_b, mask_b = make(img, gen(seed))
        assert torch.equal(out_a, out_b) and torch.equal(mask_a, mask_b)
        assert set(mask_a.unique().tolist()) <= {0.0, 1.0}
        changed = (out_a != img).any(0, keepdim=True)
        assert not (changed & (mask_a == 0)).any(), "pixels changed outside the mask"
    assert not torch.equal(make(image(0), gen(1))[0], make(image(0), gen(2))[0])
    out_ref, mask_ref = make(image(0), gen(0))
    out_int, mask_int = make(image(0), 0)  # an int seed acts as a generator seeded with it
    assert torch.equal(out_int, out_ref) and torch.equal(mask_int, mask_ref)


def test_perlin_blend_opacity_is_in_the_beta_range():
    img, texture = image(0), image(1)
    mask = torch.zeros(1, 64, 64)
    mask[:, 10:40, 5:50] = 1
    for seed in range(10):
        out, m = perlin_texture_anomaly(img, texture, gen(seed), beta=(0.0, 0.8), mask=mask)
        assert torch.equal(m, mask) and torch.equal(out[:, mask[0] == 0], img[:, mask[0] == 0])
        change, contrast = (out - img)[:, mask[0] > 0], (texture - img)[:, mask[0] > 0]
        opacity = float((change * contrast).sum() / contrast.square().sum())  # 1 − β
        assert torch.allclose(change, opacity * contrast, atol=1e-6)  # one β for the image
        assert 0.2 - 1e-6 <= opacity <= 1 + 1e-6


def test_large_cutpaste_sizes():
    areas = [large_cutpaste(image(s, 256), gen(s))[1].mean() for s in range(10)]
    assert all(0.6 <= a <= 0.85 for a in areas)  # the paper's ">50 %" patch
    faithful = [large_cutpaste(image(s, 256), gen(s), faithful=True) for s in range(10)]
    black = [float((out[:, m[0] > 0] == 0).all(0).float().mean()) for out, m in faithful]
    assert np.mean(black) > 0.3  # the official code's mostly-black rotated patch


def test_texture_sources(tmp_path):
    procedural = TextureSource(None, 32)
    assert procedural.procedural and procedural.sample(gen()).shape == (3, 32, 32)
    for i in range(2):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(tmp_path / f"t{i}.jpg")
    dtd = TextureSource(tmp_path, 32)
    assert not dtd.procedural and dtd.sample(gen()).shape == (3, 32, 32)
    with pytest.raises(AfreqError, match="synth.dtd_root .* does not exist"):
        TextureSource(tmp_path / "nope", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AfreqError, match="holds no .jpg/.png"):
        TextureSource(tmp_path / "empty", 32)
    augmented = augment_texture(procedural.sample(gen()), gen(3))
    assert augmented.shape == (3, 32, 32) and 0 <= augmented.min() and augmented.max() <= 1


def test_feature_noise():
    features = torch.zeros(4, 8, 16, 16, dtype=torch.float64, requires_grad=True)
    noisy = feature_noise(features, 0.015, gen())
    assert abs(float(noisy.detach().std()) - 0.015) < 0.001
    assert abs(float(noisy.detach().mean())) < 0.001
    assert torch.equal(noisy, feature_noise(features, 0.015, 0)) and noisy.dtype == torch.float64
    noisy.sum().backward()
    assert torch.equal(features.grad, torch.ones_like(features))
    with pytest.raises(AfreqError, match="seed '7' must be an int"):
        feature_noise(features, generator="7")


def test_otsu_threshold_matches_opencv():
    rng = np.random.default_rng(0)
    for _ in range(20):
        dark = rng.normal(rng.uniform(30, 120), rng.uniform(5, 30), (48, 48))
        bright = rng.normal(rng.uniform(130, 220), rng.uniform(5, 30), (48, 48))
        grey = np.clip(np.where(rng.random((48, 48)) < 0.4, bright, dark), 0, 255).astype(np.uint8)
        level, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        assert round(otsu_threshold(torch.from_numpy(grey).double() / 255) * 255) == level


def test_otsu_foreground():
    img = torch.full((3, 32, 32), 0.2)
    img[:, 8:24, 8:24] = 0.8
    mask = otsu_foreground(img)
    assert int(mask.sum()) == 256 and int(otsu_foreground(img, invert=True).sum()) == 1024 - 256


@pytest.mark.parametrize(("h", "w"), [(206, 214), (37, 51), (229, 120)])
def test_official_cutpaste_rotation_is_cv2_warp_affine(h, w):
    patch = np.random.default_rng(h).random((h, w, 3), dtype=np.float32)
    for radians in range(-6, 6):
        matrix = np.float32([[np.cos(radians), -np.sin(radians), 0],
                             [np.sin(radians), np.cos(radians), 0]])
        reference = cv2.warpAffine(patch, matrix, (w, h))  # bilinear, black outside
        ours = rotate_like_cv2(torch.from_numpy(patch).permute(2, 0, 1), radians)
        np.testing.assert_allclose(ours.permute(1, 2, 0).numpy(), reference, atol=1e-6)


def test_official_cutpaste_draws_height_and_width_apart():
    shapes = set()
    for seed in range(12):
        _, mask = large_cutpaste(image(seed, 256), gen(seed), faithful=True)
        rows, cols = mask[0].any(1).sum().item(), mask[0].any(0).sum().item()
        shapes.add((rows, cols))
        assert rows <= 228 and cols <= 228  # 80–90 % of 256, made even, clipped at the border
    assert any(r != c for r, c in shapes)  # not always square, as the code's two draws


def test_otsu_foreground_splits_the_rounded_grey_image_as_opencv():
    rng = np.random.default_rng(1)
    for _ in range(10):
        rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        rgb[rng.random((40, 40)) < 0.5] //= 3  # two populations
        grey = cv2.cvtColor(rgb[..., ::-1].copy(), cv2.COLOR_BGR2GRAY)
        np.testing.assert_array_equal(grey_levels(torch.from_numpy(rgb).permute(2, 0, 1) / 255),
                                      grey)
        _, reference = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        ours = otsu_foreground(torch.from_numpy(rgb).permute(2, 0, 1).double() / 255)
        np.testing.assert_array_equal(ours[0].numpy(), reference)
