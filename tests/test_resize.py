"""dataset.resize: PIL's antialiased resize, or the official codes' cv2.imread + cv2.resize."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from anomaly_freq.config import load_config
from anomaly_freq.data.cache import DecodeCache
from anomaly_freq.data.datamodule import SampleDataset
from anomaly_freq.data.images import decode_image
from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.errors import AfreqError


def _png(path, height, width, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16)).save(path)
    else:
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode).save(path)
    return path


@pytest.mark.parametrize(("height", "width", "size"), [(1024, 1024, 256), (333, 517, 256),
                                                        (97, 61, 64), (64, 64, 64)])
def test_cv2_mode_equals_the_official_loaders_read(tmp_path, height, width, size):
    path = _png(tmp_path / "x.png", height, width)
    reference = cv2.resize(cv2.imread(str(path)), (size, size), interpolation=cv2.INTER_LINEAR)
    ours = decode_image(path, size, resize="cv2")
    assert ours.dtype == np.uint8 and ours.shape == (size, size, 3)
    np.testing.assert_array_equal(ours, reference[..., ::-1])  # RGB, the batch format's order
    if (height, width) != (size, size):  # the modes differ wherever antialiasing matters
        assert np.abs(ours.astype(int) - decode_image(path, size).astype(int)).max() > 0


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_cv2_mode_reads_grey_alpha_and_16_bit_as_imread_does(tmp_path, mode):
    path = _png(tmp_path / "x.png", 40, 50, mode)
    reference = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (32, 32),
                           interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(decode_image(path, 32, resize="cv2"), reference[..., ::-1])


def test_cv2_mode_centre_crops_like_pil(tmp_path):
    path = _png(tmp_path / "x.png", 80, 80)
    full = decode_image(path, 80, resize="cv2")
    np.testing.assert_array_equal(decode_image(path, 80, 64, resize="cv2"), full[8:72, 8:72])


def test_decoded_images_are_cached_per_resize_mode(tmp_path):
    path = _png(tmp_path / "x.png", 90, 70)
    cache = DecodeCache("disk", tmp_path / "cache")
    images = {mode: SampleDataset([Sample(path, 0, "good")], "c", 32, cache=cache,
                                  resize=mode)[0]["image"] for mode in ("pil", "cv2", "pil")}
    assert not np.array_equal(images["pil"].numpy(), images["cv2"].numpy())
    np.testing.assert_array_equal(images["cv2"].numpy() * 255,
                                  decode_image(path, 32, resize="cv2").transpose(2, 0, 1))


def test_paper_presets_use_the_codes_resize_and_fast_presets_keep_pil():
    for method in ("fair", "dfd", "ocrgan"):
        assert load_config([f"method={method}"]).dataset.resize == "cv2"
        assert load_config([f"method={method}_fast"]).dataset.resize == "pil"
    assert load_config([]).dataset.resize == "pil"


def test_bad_resize_value_and_missing_opencv(tmp_path, monkeypatch):
    path = _png(tmp_path / "x.png", 8, 8)
    with pytest.raises(AfreqError, match="dataset.resize=lanczos is unknown; valid: pil, cv2"):
        decode_image(path, 8, resize="lanczos")
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(AfreqError, match="pip install opencv-python-headless"):
        decode_image(path, 8, resize="cv2")
