"""dataset.mask_rule (how the codes resize and binarise masks) and dataset.shot_fill (the
corners of DFD's rotated shots), each against the formula or OpenCV on small arrays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from anomaly_freq.config import build_method, load_config
from anomaly_freq.data.datamodule import SampleDataset
from anomaly_freq.data.fewshot import RotatedCopies
from anomaly_freq.data.images import binarise, decode_mask
from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.errors import AfreqError
from anomaly_freq.metrics import Evaluator
from anomaly_freq.run.engine import shot_fill

LEVELS = np.arange(256, dtype=np.uint8)


def test_binarise_follows_each_codes_formula():
    pixel, pro = binarise(LEVELS, "fair_code")
    np.testing.assert_array_equal(pixel, LEVELS == 255)  # FAIR: pixel metrics on mask == 255
    np.testing.assert_array_equal(pro, LEVELS > 0)       # FAIR: PRO on every non-zero pixel
    pixel, pro = binarise(LEVELS, "dfd_code")
    np.testing.assert_array_equal(pixel, LEVELS / 255.0 > 0.5)
    np.testing.assert_array_equal(pro, pixel)
    pixel, pro = binarise(LEVELS, "nearest")
    np.testing.assert_array_equal(pixel, LEVELS != 0)
    np.testing.assert_array_equal(pro, pixel)


def _soft_mask(tmp_path, side=97):
    """An image and a mask whose edge has intermediate grey levels, at an odd size."""
    yy, xx = np.mgrid[:side, :side]
    disc = np.clip(255 * (30 - np.hypot(yy - 40, xx - 50)), 0, 255).astype(np.uint8)
    Image.fromarray(disc).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(tmp_path / "x.png")
    return tmp_path / "x.png", tmp_path / "m.png"


@pytest.mark.parametrize("rule", ["fair_code", "dfd_code"])
def test_code_rules_resize_the_mask_as_cv2_does(tmp_path, rule):
    image, mask = _soft_mask(tmp_path)
    reference = cv2.resize(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), (32, 32),
                           interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(decode_mask(mask, image, 32, rule=rule), reference)
    np.testing.assert_array_equal(decode_mask(mask, image, 40, 32, rule=rule),
                                  cv2.resize(cv2.imread(str(mask), 0), (40, 40))[4:36, 4:36])


def test_nearest_rule_binarises_before_a_nearest_resize(tmp_path):
    image, mask = _soft_mask(tmp_path)
    binary = Image.fromarray((np.asarray(Image.open(mask)) != 0).astype(np.uint8) * 255)
    reference = np.asarray(binary.resize((32, 32), Image.NEAREST))
    np.testing.assert_array_equal(decode_mask(mask, image, 32), reference)


def test_fair_code_gives_pro_its_own_wider_mask(tmp_path):
    image, mask = _soft_mask(tmp_path)
    item = SampleDataset([Sample(image, 1, "cut", mask)], "c", 32, mask_rule="fair_code")[0]
    levels = cv2.resize(cv2.imread(str(mask), 0), (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(item["mask"][0].numpy(), levels == 255)
    np.testing.assert_array_equal(item["pro_mask"][0].numpy(), levels != 0)
    assert item["pro_mask"].sum() > item["mask"].sum() > 0
    other = SampleDataset([Sample(image, 1, "cut", mask)], "c", 32, mask_rule="dfd_code")[0]
    assert "pro_mask" not in other and not torch.equal(other["mask"], item["mask"])


def test_evaluator_scores_pro_on_the_pro_masks(tmp_path):
    image, mask = _soft_mask(tmp_path)
    data = SampleDataset([Sample(image, 1, "cut", mask), Sample(image, 0, "good")], "c", 32,
                         mask_rule="fair_code")
    batch = default_collate([data[0], data[1]])
    # the map equals the PRO mask, so AUPRO with FAIR's PRO masks is perfect and the pixel-metric
    # masks (the strict == 255 core) would leave the soft ring as false positives
    maps = batch["pro_mask"].clone()
    rule = {}
    for name in ("fair_code", "nearest"):
        evaluator = Evaluator(32, mask_rule=name)
        evaluator.update(batch, {"anomaly_map": maps, "pred_score": maps.amax((1, 2, 3))})
        rule[name] = evaluator.compute()
    assert rule["fair_code"]["pixel_aupro"] > rule["nearest"]["pixel_aupro"]
    assert rule["fair_code"]["pixel_aupro"] == pytest.approx(1.0, abs=1e-3)


def test_corner_fill_is_the_top_left_pixels_blue_value():
    image = torch.rand(3, 16, 16)
    base = [{"image": image, "mask": torch.zeros(1, 16, 16), "label": torch.tensor(0)}]
    for fill, value in (("corner", image[2, 0, 0]), ("zero", torch.tensor(0.0))):
        copies = RotatedCopies(base, copies=1, max_angle=0, seed=0, fill=fill)
        copies.angles = [45.0]  # the corners of a 45° rotation lie outside the source
        rotated = copies[0]["image"]
        np.testing.assert_allclose(rotated[:, 0, 0], value.expand(3), atol=1e-6)
        np.testing.assert_allclose(rotated[:, -1, -1], value.expand(3), atol=1e-6)


def test_paper_presets_select_their_codes_mask_rule_and_fill():
    assert load_config(["method=fair"]).dataset.mask_rule == "fair_code"
    assert load_config(["method=dfd"]).dataset.mask_rule == "dfd_code"
    assert load_config(["method=dfd"]).dataset.shot_fill == "code"
    for fast in ("fair_fast", "dfd_fast", "ocrgan_fast"):
        assert load_config([f"method={fast}"]).dataset.mask_rule == "nearest"
    assert load_config(["method=dfd_fast"]).dataset.shot_fill == "zero"


@pytest.mark.parametrize(("dataset", "category", "fill"), [
    ("mvtec_ad", "hazelnut", "corner"), ("mvtec_ad", "carpet", "zero"),
    ("visa", "candle", "zero")])
def test_dfd_code_fill_is_the_corner_where_the_code_thresholds_a_foreground(dataset, category,
                                                                            fill):
    cfg = load_config(["method=dfd", f"dataset={dataset}", f"dataset.category={category}",
                       "backbone.name=resnet18", "backbone.pretrained=false"])
    assert shot_fill(cfg, build_method(cfg)) == fill


def test_bad_mask_rule_and_shot_fill_values():
    with pytest.raises(AfreqError, match="dataset.mask_rule=soft is unknown; valid: nearest, "
                                         "fair_code, dfd_code"):
        SampleDataset([], "c", 32, mask_rule="soft")
    cfg = load_config(["method=fair_fast", "dataset.shot_fill=grey"])
    method = build_method(cfg)
    with pytest.raises(AfreqError, match="dataset.shot_fill=grey is unknown; valid: zero, "
                                         "corner, code"):
        shot_fill(cfg, method)
    cfg = load_config(["method=fair_fast", "dataset.shot_fill=code"])
    with pytest.raises(AfreqError, match="fair's code has no rotated copies"):
        shot_fill(cfg, method)
