"""Anomaly synthesis: binary masks, determinism under a seed, changes only inside the mask."""

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_freq.errors import AfreqError
from anomaly_freq.synth import (
    TextureSource,
    augment_texture,
    cutout,
    cutpaste_small,
    feature_noise,
    large_cutpaste,
    otsu_foreground,
    perlin_mask,
    perlin_texture_anomaly,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def image(seed=0, size=64):
    return torch.rand(3, size, size, generator=gen(seed))


def test_perlin_masks_are_binary_and_usually_non_empty():
    masks = [perlin_mask((64, 64), gen(s)) for s in range(40)]
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in masks)
    non_empty = sum(bool(m.any()) for m in masks) / len(masks)
    assert non_empty > 0.6  # DRAEM's threshold leaves some draws empty; most are not
    assert 0.01 < torch.stack(masks).mean() < 0.5


SYNTHESISERS = {
    "perlin": lambda img, g: perlin_texture_anomaly(img, torch.rand(img.shape, generator=g), g),
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


def test_feature_noise_and_otsu():
    noisy = feature_noise(torch.zeros(1000), 0.015, gen())
    assert abs(float(noisy.std()) - 0.015) < 0.002
    img = torch.full((3, 32, 32), 0.2)
    img[:, 8:24, 8:24] = 0.8
    mask = otsu_foreground(img)
    assert int(mask.sum()) == 256 and int(otsu_foreground(img, invert=True).sum()) == 1024 - 256
