import hashlib
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from anomaly_freq.data import synthetic
from anomaly_freq.data.mvtec_layout import read_category
from anomaly_freq.errors import AfreqError

SPEC = synthetic.SyntheticSpec(seed=5, size=64, n_train=4, n_test_good=3, n_test_per_defect=2)


def _digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_generation_is_deterministic(tmp_path):
    a = synthetic.ensure_generated(tmp_path / "a", SPEC)
    b = synthetic.ensure_generated(tmp_path / "b", SPEC)
    assert _digest(a) == _digest(b)
    other = synthetic.ensure_generated(tmp_path / "c", synthetic.SyntheticSpec(seed=6, size=64,
                                       n_train=4, n_test_good=3, n_test_per_defect=2))
    assert _digest(a) != _digest(other)


def test_layout_counts_and_groups(tmp_path):
    root = synthetic.ensure_generated(tmp_path, SPEC)
    groups = {c.group for c in synthetic.CATEGORIES.values()}
    assert groups == {"texture", "object"}
    assert sum(c.group == "texture" for c in synthetic.CATEGORIES.values()) >= 2
    for name, category in synthetic.CATEGORIES.items():
        train, test = read_category(root / name)
        assert len(train) == SPEC.n_train
        assert len(category.defects) >= 4
        assert len(test) == SPEC.n_test_good + SPEC.n_test_per_defect * len(category.defects)
        for sample in test:
            if sample.label:
                assert sample.mask.name == f"{sample.path.stem}_mask.png"
                assert sample.mask.parent.name == sample.defect
                mask = np.asarray(Image.open(sample.mask))
                assert set(np.unique(mask)) <= {0, 255} and mask.any()


@pytest.mark.parametrize("category", list(synthetic.CATEGORIES))
def test_masks_are_exact(category):
    """Each defect changes only pixels inside its mask, and nearly all of them."""
    cat = synthetic.CATEGORIES[category]
    rng = np.random.default_rng(0)
    for defect, make in cat.defects.items():
        for _ in range(3):
            scene = cat.render(rng, 128)
            clean = synthetic._to_uint8(scene.image)
            broken, mask = make(rng, scene)
            changed = (synthetic._to_uint8(broken) != clean).any(-1)
            assert mask.any(), defect
            assert not (changed & ~mask).any(), f"{defect} changed pixels outside its mask"
            assert changed[mask].mean() > 0.9, f"{defect} left much of its mask unchanged"


def test_interrupted_generation_leaves_no_complete_tree(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "write_category", fail)
    with pytest.raises(RuntimeError):
        synthetic.ensure_generated(tmp_path, SPEC)
    assert list(tmp_path.iterdir()) == []


def test_subtle_defects_keep_their_masks_and_fade(tmp_path):
    full = synthetic.ensure_generated(tmp_path, SPEC)
    faint = synthetic.ensure_generated(tmp_path, replace(SPEC, defect_strength=0.3))
    assert faint.name == full.name + "-strength0.3"
    assert _digest(full / "weave" / "train") == _digest(faint / "weave" / "train")
    assert _digest(full / "weave" / "ground_truth") == _digest(faint / "weave" / "ground_truth")
    for defect in synthetic.CATEGORIES["weave"].defects:
        strong = np.asarray(Image.open(full / "weave" / "test" / defect / "000.png"), float)
        weak = np.asarray(Image.open(faint / "weave" / "test" / defect / "000.png"), float)
        mask = np.asarray(Image.open(full / "weave" / "ground_truth" / defect / "000_mask.png"))
        # the normal image under the defect is not on disk, but outside the mask both are it
        assert np.array_equal(strong[mask == 0], weak[mask == 0])
        assert 0 < np.abs(weak - strong)[mask > 0].mean()


def test_subtle_blends_a_fraction_of_the_way():
    normal, defect = np.zeros((2, 2, 3), np.float32), np.ones((2, 2, 3), np.float32)
    assert np.allclose(synthetic.subtle(defect, normal, 0.3), 0.3)
    assert synthetic.subtle(defect, normal, 1.0) is defect


@pytest.mark.parametrize("strength", [0.0, 1.5])
def test_defect_strength_outside_its_range_is_refused(strength):
    with pytest.raises(AfreqError, match=f"dataset.defect_strength={strength} must be in"):
        replace(SPEC, defect_strength=strength)
