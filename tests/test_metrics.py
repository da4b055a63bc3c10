"""Metrics against scikit-learn and against straight transcriptions of the reference algorithms."""

import bisect

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn import metrics as skm

from anomaly_freq.errors import AfreqError
from anomaly_freq.metrics import (
    Evaluator,
    EvaluatorCallback,
    aupro,
    auroc,
    average_precision,
    binary_metrics,
    f1_max,
    pro_curve,
)
from tests.conftest import naive_code_normalise

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("ties", [False, True])
def test_image_metrics_match_sklearn(ties):
    for _ in range(5):
        labels = RNG.integers(0, 2, 300)
        scores = RNG.normal(size=300) + labels
        if ties:
            scores = np.round(scores, 1)
        assert auroc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
        assert average_precision(scores, labels) == pytest.approx(
            skm.average_precision_score(labels, scores), abs=1e-12)
        assert f1_max(scores, labels) == pytest.approx(brute_force_f1_max(scores, labels),
                                                       abs=1e-12)
        assert binary_metrics(scores, labels) == {"auroc": auroc(scores, labels),
                                                  "ap": average_precision(scores, labels),
                                                  "f1max": f1_max(scores, labels)}


def brute_force_f1_max(scores, labels):
    best = 0.0
    for t in set(scores.tolist()):
        predicted = scores >= t
        tp = int(np.sum(predicted & (labels == 1)))
        fp = int(np.sum(predicted & (labels == 0)))
        fn = int(np.sum(~predicted & (labels == 1)))
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def test_degenerate_inputs():
    with pytest.warns(UserWarning, match="all scores are equal"):
        assert auroc(np.ones(6), np.array([0, 1, 0, 1, 0, 1])) == 0.5
    with pytest.raises(AfreqError, match="one class only"):
        auroc(np.arange(4.0), np.zeros(4))
    with pytest.raises(AfreqError, match="NaN or infinite"):
        auroc(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1]))
    with pytest.raises(AfreqError, match=r"anomaly map 0 is \(4, 4\) but its mask is \(5, 5\)"):
        aupro([np.zeros((4, 4))], [np.ones((5, 5), bool)])
    with pytest.raises(AfreqError, match="16 scores but 25 labels"):
        auroc(np.zeros((4, 4)), np.eye(5))
    with pytest.raises(AfreqError, match="anomaly map 1 contains NaN"):
        aupro([np.zeros((4, 4)), np.full((4, 4), np.inf)], [np.eye(4), np.eye(4)])
    with pytest.raises(AfreqError, match="no anomalous region"):
        aupro([np.zeros((4, 4))], [np.zeros((4, 4))])
    with pytest.raises(AfreqError, match="limit 0 must be in"):
        aupro([np.zeros((4, 4))], [np.eye(4)], limit=0)


# --- reference transcriptions, written plainly -------------------------------------------------

def reference_trapezoid(x, y, x_max):
    x, y = list(x), list(y)
    correction = 0.0
    if x_max not in x:
        ins = bisect.bisect(x, x_max)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a <= x_max]
    area = sum(0.5 * (pairs[i + 1][1] + pairs[i][1]) * (pairs[i + 1][0] - pairs[i][0])
               for i in range(len(pairs) - 1))
    return area + correction


def reference_exact(maps, masks, limit=0.3):
    fp_change, pro_change, n_ok, n_regions = [], [], 0, 0
    for mask in masks:
        labeled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        fp = np.zeros(mask.shape)
        pro = np.zeros(mask.shape)
        ok = labeled == 0
        fp[ok] = 1
        n_ok += ok.sum()
        n_regions += count
        for k in range(1, count + 1):
            region = labeled == k
            pro[region] = 1.0 / region.sum()
        fp_change.append(fp)
        pro_change.append(pro)
    scores = np.array(maps).ravel()
    order = np.argsort(scores)[::-1]
    fprs = np.cumsum(np.array(fp_change).ravel()[order]) / n_ok
    pros = np.cumsum(np.array(pro_change).ravel()[order]) / n_regions
    sorted_scores = scores[order]
    keep = np.append(np.diff(sorted_scores) != 0, True)
    fprs = np.clip(np.r_[0, fprs[keep], 1], 0, 1)
    pros = np.clip(np.r_[0, pros[keep], 1], 0, 1)
    return reference_trapezoid(fprs, pros, limit) / limit


def reference_mvtec3d(maps, masks, steps, limit=0.3):
    components, normal = [], []
    for amap, mask in zip(maps, masks, strict=True):
        labeled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        normal.extend(amap[labeled == 0])
        components.extend(np.sort(amap[labeled == k]) for k in range(1, count + 1))
    normal = np.sort(normal)
    fprs, pros = [], []
    for pos in np.linspace(0, len(normal) - 1, steps).astype(int):
        threshold = normal[pos]
        fprs.append(1.0 - (pos + 1) / len(normal))
        pros.append(np.mean([(c > threshold).sum() / len(c) for c in components]))
    return reference_trapezoid(fprs[::-1], pros[::-1], limit) / limit


def reference_cflow(maps, masks, steps=200, limit=0.3):
    maps, masks = np.array(maps), np.array(masks)
    low, high = maps.min(), maps.max()
    fprs, pros = [], []
    for th in np.arange(low, high, (high - low) / steps):
        binary = maps > th
        overlaps = []
        for b, m in zip(binary, masks, strict=True):
            labeled, count = ndimage.label(m, structure=np.ones((3, 3)))
            for k in range(1, count + 1):
                region = labeled == k
                overlaps.append(b[region].sum() / region.sum())
        inverse = ~masks
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
        pros.append(np.mean(overlaps))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < limit
    fprs = fprs[keep]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return skm.auc(fprs, pros[keep])


def random_case(n=6, size=48, good=2, ties=True):
    maps, masks = [], []
    for i in range(n):
        mask = np.zeros((size, size), bool)
        if i >= good:
            for _ in range(RNG.integers(1, 4)):  # several regions, some touching diagonally
                y, x = RNG.integers(2, size - 10, 2)
                h, w = RNG.integers(2, 9, 2)
                mask[y:y + h, x:x + w] = True
        amap = RNG.normal(size=(size, size)) + 1.5 * mask
        maps.append(np.round(amap, 1) if ties else amap)
        masks.append(mask)
    return maps, masks


@pytest.mark.parametrize("ties", [True, False])
def test_exact_aupro_matches_the_reference(ties):
    for _ in range(3):
        maps, masks = random_case(ties=ties)
        assert aupro(maps, masks) == pytest.approx(reference_exact(maps, masks), abs=1e-6)


@pytest.mark.parametrize("limit", [0.01, 0.3, 1.0])
def test_exact_aupro_matches_the_reference_at_any_limit_and_dtype(limit):
    maps, masks = random_case(n=8, size=40, good=3)
    maps = [m.astype(np.float32) for m in maps]  # float32 ties, as the evaluator keeps maps
    masks[-1][:] = False  # an anomalous-looking image without regions counts as normal
    masks[3] = masks[3].astype(np.uint8) * 255  # any non-zero mask value is anomalous
    assert aupro(maps, masks, limit) == pytest.approx(
        reference_exact(maps, [m > 0 for m in masks], limit), abs=1e-6)


def test_limited_curve_is_a_prefix_of_the_full_curve():
    maps, masks = random_case()
    full, part = pro_curve(maps, masks), pro_curve(maps, masks, limit=0.3)
    assert part[0][-2] <= 0.3 < part[0][-1]
    n = part[0].size
    assert np.array_equal(full[0][:n], part[0]) and np.allclose(full[1][:n], part[1], atol=1e-12)


def test_anomalib_case_gives_one_sixth():
    preds = (np.arange(2800) / 2800).reshape(400, 7)
    gt = np.zeros((400, 7), bool)
    gt[:, 3] = True
    assert aupro([preds], [gt], limit=1 / 3) == pytest.approx(1 / 6, abs=1e-3)
    assert aupro([preds, preds], [gt, gt], limit=1 / 3) == pytest.approx(1 / 6, abs=1e-3)


def test_mvtec3d_variant_matches_its_reference_and_converges():
    maps, masks = random_case(ties=False)  # with ties, its strict '>' lags the exact curve
    ours = aupro(maps, masks, variant="mvtec3d", steps=60)
    assert ours == pytest.approx(reference_mvtec3d(maps, masks, 60), abs=1e-9)
    assert aupro(maps, masks, variant="mvtec3d", steps=20000) == pytest.approx(
        aupro(maps, masks), abs=2e-3)


def test_cflow_variant_matches_its_reference():
    maps, masks = random_case(n=4, size=32)
    assert aupro(maps, masks, variant="cflow") == pytest.approx(
        reference_cflow(maps, masks), abs=1e-9)
    with pytest.raises(AfreqError, match="pro_variant=nope"):
        aupro(maps, masks, variant="nope")


def test_pro_curve_is_monotone_from_origin():
    fpr, pro = pro_curve(*random_case())
    assert fpr[0] == 0 and pro[0] == 0
    assert (np.diff(fpr) >= 0).all() and (np.diff(pro) >= 0).all()


# --- the evaluator -------------------------------------------------------------------------------

def make_batch(tmp_path, n=4, size=16):
    from PIL import Image

    masks, paths, mask_paths = [], [], []
    for i in range(n):
        mask = np.zeros((2 * size, 2 * size), np.uint8)
        if i % 2:
            mask[4:12, 6:14] = 255
        Image.fromarray(np.zeros((2 * size, 2 * size, 3), np.uint8)).save(tmp_path / f"{i}.png")
        if i % 2:
            Image.fromarray(mask).save(tmp_path / f"{i}_mask.png")
        small = torch.from_numpy(mask[::2, ::2] > 0).float()[None]
        masks.append(small)
        paths.append(str(tmp_path / f"{i}.png"))
        mask_paths.append(str(tmp_path / f"{i}_mask.png") if i % 2 else "")
    batch = {"image": torch.zeros(n, 3, size, size), "mask": torch.stack(masks),
             "label": torch.tensor([i % 2 for i in range(n)]), "path": paths,
             "mask_path": mask_paths, "category": ["c"] * n, "defect": ["good", "bad"] * (n // 2)}
    noise = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0))
    amap = batch["mask"] * 2 + noise
    return batch, {"anomaly_map": amap, "pred_score": amap.flatten(1).amax(1)}


@pytest.mark.parametrize("resolution", [8, 16, "original"])
def test_evaluator_resolutions(tmp_path, resolution):
    batch, outputs = make_batch(tmp_path)
    evaluator = Evaluator(resolution=resolution)
    evaluator.update(batch, outputs)
    metrics = evaluator.compute()
    expected = 32 if resolution == "original" else resolution
    assert evaluator.maps[0].shape == evaluator.masks[0].shape == (expected, expected)
    assert metrics["image_auroc"] == 1.0 and metrics["pixel_auroc"] > 0.95
    assert 0 < metrics["pixel_aupro"] <= 1
    assert evaluator.protocol()["eval_resolution"] == resolution


def test_evaluator_minmax_parts_changes_fusion_not_single_scores(tmp_path):
    batch, outputs = make_batch(tmp_path)
    plain = Evaluator()
    plain.update(batch, outputs)
    scaled = Evaluator(normalisation="minmax")
    scaled.update(batch, outputs)
    assert scaled.compute()["image_auroc"] == plain.compute()["image_auroc"]
    assert scaled.protocol()["score_normalisation"] == "minmax"
    parts = {**outputs, "map_parts": torch.cat([outputs["anomaly_map"], -outputs["anomaly_map"]
                                                * 100], 1),
             "score_parts": torch.stack([outputs["pred_score"], -outputs["pred_score"] * 100], 1)}
    fused = Evaluator(normalisation="minmax")
    fused.update(batch, parts)
    assert fused.final_maps()[0].shape == (256, 256)
    assert np.allclose(fused.scores(), 1.0)  # each part min-max scaled, then summed


@pytest.mark.parametrize("normalisation", ["none", "minmax", "dfd_code"])
def test_a_single_map_part_keeps_its_part_axis(tmp_path, normalisation):
    batch, outputs = make_batch(tmp_path)
    single = {**outputs, "map_parts": outputs["anomaly_map"],
              "score_parts": outputs["pred_score"][:, None]}
    evaluator = Evaluator(resolution=16, normalisation=normalisation)
    evaluator.update(batch, single)
    assert evaluator.parts[0].shape == (1, 16, 16)
    assert evaluator.final_maps()[0].shape == (16, 16)
    assert evaluator.compute()["pixel_auroc"] > 0.95


def test_evaluator_without_masks_gives_image_metrics_only(tmp_path):
    batch, outputs = make_batch(tmp_path)
    batch["mask_path"] = [""] * 4
    evaluator = Evaluator()
    evaluator.update(batch, outputs)
    assert set(evaluator.compute()) == {"image_auroc", "image_ap", "image_f1max"}


def test_evaluator_rejects_bad_options():
    with pytest.raises(AfreqError, match="eval.resolution=-3"):
        Evaluator(resolution=-3)
    with pytest.raises(AfreqError, match="eval.normalisation=zscore"):
        Evaluator(normalisation="zscore")
    with pytest.raises(AfreqError, match="metrics.pro_variant=cflow200 is unknown"):
        Evaluator(pro_variant="cflow200")


@pytest.mark.parametrize("variant", ["mvtec3d", "cflow"])
def test_evaluator_uses_the_named_pro_variant(tmp_path, variant):
    batch, outputs = make_batch(tmp_path)
    evaluator = Evaluator(pro_variant=variant)
    evaluator.update(batch, outputs)
    expected = aupro(evaluator.maps, evaluator.masks, variant=variant)
    assert evaluator.compute()["pixel_aupro"] == expected
    assert evaluator.protocol()["pro_variant"] == variant


def test_evaluator_minmax_scales_maps_to_unit_range(tmp_path):
    batch, outputs = make_batch(tmp_path)
    outputs = {"anomaly_map": outputs["anomaly_map"] * 50 - 7, "pred_score": outputs["pred_score"]}
    plain, scaled = Evaluator(), Evaluator(normalisation="minmax")
    for evaluator in (plain, scaled):
        evaluator.update(batch, outputs)
    maps = scaled.final_maps()
    assert min(m.min() for m in maps) == 0 and max(m.max() for m in maps) == pytest.approx(1)
    assert plain.maps[0].dtype == np.float32 and maps[0].dtype == np.float32
    ours, theirs = scaled.compute(), plain.compute()
    assert ours["pixel_auroc"] == pytest.approx(theirs["pixel_auroc"], abs=1e-9)
    assert ours["pixel_aupro"] == pytest.approx(theirs["pixel_aupro"], abs=1e-6)
    assert scaled.scores().min() == 0 and scaled.scores().max() == 1


def test_evaluator_streams_batches_and_keeps_rows(tmp_path):
    batch, outputs = make_batch(tmp_path)
    whole, split = Evaluator(resolution=16), Evaluator(resolution=16)
    whole.update(batch, outputs)
    for part in (slice(0, 1), slice(1, 4)):
        split.update({k: v[part] for k, v in batch.items()},
                     {k: v[part] for k, v in outputs.items()})
    assert split.compute() == whole.compute()
    assert [r["label"] for r in split.rows] == [0, 1, 0, 1]
    assert set(split.rows[0]) == {"path", "category", "defect", "label", "pred_score"}


def test_evaluator_degenerate_inputs(tmp_path):
    batch, outputs = make_batch(tmp_path)
    broken = {**outputs, "anomaly_map": outputs["anomaly_map"].clone()}
    broken["anomaly_map"][2, 0, 3, 3] = float("nan")
    with pytest.raises(AfreqError, match="2.png contains NaN or infinite"):
        Evaluator().update(batch, broken)
    only_good = {**batch, "label": torch.zeros(4, dtype=torch.int64)}
    evaluator = Evaluator()
    evaluator.update(only_good, outputs)
    with pytest.raises(AfreqError, match="one class only"):
        evaluator.compute()
    flat = {"anomaly_map": torch.ones(4, 1, 16, 16), "pred_score": outputs["pred_score"]}
    evaluator = Evaluator()
    evaluator.update(batch, flat)
    with pytest.warns(UserWarning, match="all scores are equal"):
        assert evaluator.compute()["pixel_auroc"] == 0.5
    with pytest.raises(AfreqError, match="no predictions"):
        Evaluator().compute()


def test_evaluator_callback_checks_the_contract(tmp_path):
    batch, outputs = make_batch(tmp_path)
    evaluator = Evaluator()
    callback = EvaluatorCallback(evaluator)
    callback.on_predict_batch_end(None, torch.nn.Module(), outputs, batch, 0)
    assert len(evaluator.rows) == 4
    with pytest.raises(TypeError, match="anomaly_map must be B×1×H×W"):
        bad = {**outputs, "anomaly_map": outputs["anomaly_map"][:, 0]}
        callback.on_predict_batch_end(None, torch.nn.Module(), bad, batch, 0)


def test_evaluator_dfd_code_normalisation_is_the_codes_broadcasting(tmp_path):
    batch, outputs = make_batch(tmp_path)
    size = outputs["anomaly_map"].shape[-1]
    second = torch.rand(outputs["anomaly_map"].shape, generator=torch.Generator().manual_seed(1))
    parts = torch.cat([outputs["anomaly_map"], 3 * second + 1], 1)
    evaluator = Evaluator(resolution=size, normalisation="dfd_code")
    evaluator.update(batch, {**outputs, "map_parts": parts,
                             "score_parts": parts.flatten(2).amax(2)})
    # the code's broadcasting, transcribed, over the test set's maps of each discriminator
    expected = (naive_code_normalise(parts[:, 0].double())
                + naive_code_normalise(parts[:, 1].double())) / 2
    assert np.allclose(np.stack(evaluator.final_maps()), expected.numpy(), atol=1e-5)
    minmax = Evaluator(resolution=size, normalisation="minmax")
    minmax.update(batch, {**outputs, "map_parts": parts, "score_parts": parts.flatten(2).amax(2)})
    assert np.array_equal(evaluator.scores(), minmax.scores())  # image scores as the code's
    assert "slip" in evaluator.protocol()["score_normalisation_scope"]
