"""DFD plugin: sizes and shapes against the spec, its building blocks, and one real run."""

import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from anomaly_freq.config import build_method, load_config
from anomaly_freq.errors import AfreqError
from anomaly_freq.freq import gaussian_smooth
from anomaly_freq.methods.dfd import features, losses
from anomaly_freq.methods.dfd.synthesis import PseudoAnomalies
from anomaly_freq.metrics.normalisation import dfd_code_slip
from anomaly_freq.parameters import count_parameters
from anomaly_freq.run.engine import run
from tests.conftest import naive_code_normalise

WRN = ["method=dfd", "backbone.pretrained=false", "dataset.category=weave"]


@pytest.fixture(scope="module")
def wrn_model():
    return build_method(load_config(WRN)).eval()


def test_trainable_parameters_match_the_spec(wrn_model):
    m = wrn_model
    assert count_parameters(m, trainable=True) == 36_213_760  # 36.21 M (spec §7)
    assert count_parameters(m, trainable=False) == 24_862_528  # frozen WRN-50-2 to layer3: 24.86 M
    assert round(count_parameters(m.adaptor, trainable=True) / 1e6, 2) == 2.36
    assert round(count_parameters(m.gaussian, trainable=True) / 1e6, 2) == 1.58
    assert round(count_parameters(m.perlin, trainable=True) / 1e6, 2) == 32.28
    assert m.perlin.pos_embed.shape == (1, 1025, 1536)
    attention = m.perlin.block.attn
    assert attention.num_heads == 16 and attention.head_dim == 96


def test_feature_shapes_at_256(wrn_model):
    m = wrn_model
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer2, layer3 = m.features.backbone(x)
        assert layer2.shape == (1, 512, 32, 32) and layer3.shape == (1, 1024, 16, 16)
        assert m.grid == (32, 32)
        assert features.local_aggregate([layer2, layer3], 1536).shape == (1024, 1536)
        out = m.predict_step({"image": x})
    assert out["anomaly_map"].shape == (1, 1, 256, 256) and out["pred_score"].shape == (1,)
    assert out["map_parts"].shape == (1, 2, 256, 256) and out["score_parts"].shape == (1, 2)


def _spec_split(x):
    """The spec's §4 torch reference: depthwise 5×5 binomial, reflect, decimate, zero-insert."""
    k = torch.tensor([1.0, 4, 6, 4, 1]) / 16
    kernel = torch.outer(k, k).expand(3, 1, 5, 5)
    down = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=3)[..., ::2, ::2]
    z = torch.zeros_like(x)
    z[..., ::2, ::2] = down
    low = F.conv2d(F.pad(z, (2, 2, 2, 2), mode="reflect"), 4 * kernel, groups=3)
    return low, x - low


def test_pyramid_split_matches_opencv_and_the_spec_before_normalisation(wrn_model):
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    image = x[0].permute(1, 2, 0).numpy()
    cv_low = cv2.pyrUp(cv2.pyrDown(image))
    cv_high = cv2.subtract(image, cv_low)
    low, high = _spec_split(x)
    assert np.abs(low[0].permute(1, 2, 0).numpy() - cv_low).max() < 1e-5
    assert np.abs(high[0].permute(1, 2, 0).numpy() - cv_high).max() < 1e-5
    # the method: BGR flip, split on [0, 1], then ImageNet normalisation of both bands
    bands = wrn_model.bands(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref_low, ref_high = _spec_split(x.flip(1))
    assert torch.allclose(bands["low"], (ref_low - mean) / std, atol=1e-5)
    assert torch.allclose(bands["high"], (ref_high - mean) / std, atol=1e-5)


def _unfold_reference(maps, dim):
    """Spec §5 literally: unfold, resize the neighbourhoods, pool per layer, stack, pool."""
    b, grid = maps[0].shape[0], tuple(maps[0].shape[-2:])
    rows = []
    for f in maps:
        c, h, w = f.shape[1:]
        p = F.unfold(f, 3, padding=1).view(b, c * 9, h, w)
        if (h, w) != grid:
            p = F.interpolate(p, size=grid, mode="bilinear", align_corners=False)
        rows.append(F.adaptive_avg_pool1d(p.permute(0, 2, 3, 1).reshape(-1, 1, c * 9), dim))
    return F.adaptive_avg_pool1d(torch.cat(rows, dim=1).reshape(len(rows[0]), 1, -1),
                                 dim).squeeze(1)


@pytest.mark.parametrize("dim", [96, 64, 100])
def test_local_aggregation_equals_the_unfold_pipeline(dim):
    g = torch.Generator().manual_seed(2)
    maps = [torch.randn(2, 32, 8, 8, generator=g), torch.randn(2, 64, 4, 4, generator=g)]
    assert torch.allclose(features.local_aggregate(maps, dim), _unfold_reference(maps, dim),
                          atol=1e-5)


@pytest.mark.parametrize(("shape", "sigma"), [((2, 1, 40, 33), 4.0), ((1, 1, 9, 7), 4.0),
                                              ((1, 2, 16, 16), 1.5)])
def test_smoothing_matches_scipy(shape, sigma):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = gaussian_smooth(x, sigma).numpy()
    ref = np.stack([[gaussian_filter(c, sigma, mode="reflect", truncate=4.0) for c in img]
                    for img in x.numpy()])
    assert np.abs(ours - ref).max() < 1e-10


def test_closed_form_equals_the_codes_broadcast_normalisation():
    parts = torch.rand(2, 5, 6, 6, generator=torch.Generator().manual_seed(4),
                       dtype=torch.float64)
    expected = (naive_code_normalise(parts[0]) + naive_code_normalise(parts[1])) / 2
    slip = dfd_code_slip([image.numpy() for image in parts.transpose(0, 1)])
    assert torch.allclose(torch.from_numpy(np.stack(slip)), expected)


def test_losses_follow_the_code():
    clean, noisy = torch.tensor([1.0, 0.2]), torch.tensor([-1.0, 0.1])
    assert math.isclose(float(losses.gaussian_loss(clean, noisy, 0.5)), (0.3 / 2) + (0.6 / 2),
                        rel_tol=1e-6)
    logits = torch.full((2, 1, 4, 4), 0.2)
    no_anomaly = losses.perlin_pixel_loss(logits, torch.zeros(2, 1, 4, 4), 0.5)
    assert math.isclose(float(no_anomaly), 0.3, rel_tol=1e-6)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, 0, 0] = 1
    assert math.isclose(float(losses.perlin_pixel_loss(logits, mask, 0.5)), 0.7 + 0.3,
                        rel_tol=1e-6)
    labels = torch.tensor([1, 0])
    expected = ((1 - torch.sigmoid(torch.tensor(-0.2))) ** 2 + torch.sigmoid(torch.tensor(-0.2))
                ** 2) / 2
    assert torch.isclose(losses.perlin_image_loss(logits, labels), expected)


def test_similarity_loss_pushes_features_apart():
    g = torch.Generator().manual_seed(5)
    clean = torch.randn(4, 8, generator=g)
    aug = (clean + 0.1 * torch.randn(4, 8, generator=g)).requires_grad_(True)
    tokens = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert float(losses.similarity_loss(aug, clean, torch.zeros(4)).detach()) == 0.0
    before = losses.similarity_loss(aug, clean, tokens)
    before.backward()
    with torch.no_grad():
        after = losses.similarity_loss(aug - 0.5 * aug.grad, clean, tokens)
        assert aug.grad[2:].abs().max() == 0  # only masked tokens receive gradient
    assert after < before


def test_pseudo_anomalies_are_fixed_per_copy_and_respect_masks():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    synth = PseudoAnomalies(1.0, 32, fixed=True, seed=0)
    paths, angles = ["a", "b", "c", "d"], [10.0, -30.0, 0.0, 45.0]
    first, second = synth(images, paths, angles), synth(images, paths, angles)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    augmented, masks, labels = first
    assert torch.equal(labels, (masks.flatten(1).amax(1) > 0).float())
    outside = (masks == 0).expand_as(images)
    assert torch.equal(augmented[outside], images[outside])
    corner = synth.foreground_mask(images[0], 45.0)
    assert corner[0, 0, 0] == 0 and corner[0, 16, 16] == 1
    never = PseudoAnomalies(0.0, 32)(images, paths, angles)
    assert torch.equal(never[0], images) and never[2].sum() == 0
    # the same images stored elsewhere get the same pseudo-anomalies; other images other ones
    here = [f"/data/mvtec/weave/train/good/{i:03d}.png" for i in range(4)]
    moved = [p.replace("/data/mvtec", "/elsewhere/copy") for p in here]
    assert torch.equal(synth(images, here, angles)[0], synth(images, moved, angles)[0])
    renamed = [p.replace("good/", "good/x") for p in here]
    assert not torch.equal(synth(images, here, angles)[0], synth(images, renamed, angles)[0])


def test_backbone_weights_from_a_local_state_dict(tmp_path):
    source = features.build_backbone("resnet18", (2, 3), pretrained=False)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = features.build_backbone("resnet18", (2, 3), pretrained=True, weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(),
                                                 loaded.state_dict().values(), strict=True))
    assert not any(p.requires_grad for p in loaded.parameters())
    with pytest.raises(AfreqError, match="does not exist"):
        features.build_backbone("resnet18", weights=str(tmp_path / "missing.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(AfreqError, match="lacks"):
        features.build_backbone("resnet18", weights=str(tmp_path / "other.pth"))


def test_unavailable_pretrained_weights_say_how_to_provide_them(monkeypatch):
    real = features.timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("no network")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(features.timm, "create_model", offline)
    with pytest.raises(AfreqError, match="backbone.weights=<file>.*backbone.pretrained=false"):
        features.build_backbone("resnet18", pretrained=True)
    with pytest.raises(AfreqError, match="not a timm model"):
        features.build_backbone("no_such_net", pretrained=False)


def test_config_defaults_and_per_dataset_values():
    cfg = load_config(["method=dfd"])
    assert cfg.dataset.shots == 2 and cfg.dataset.shot_copies == 80
    assert cfg.trainer.max_epochs == 80 and cfg.dataset.batch_size == 8
    mvtec = load_config(["method=dfd", "dataset=mvtec_ad"])
    assert (mvtec.method.anomaly_prob, mvtec.method.lambda_perlin, mvtec.method.lambda_sim) == (
        0.8, 2.0, 0.02)
    assert mvtec.method.foreground.hazelnut == "above"
    visa = load_config(["method=dfd", "dataset=visa"])
    assert (visa.method.anomaly_prob, visa.method.lambda_perlin, visa.method.lambda_sim) == (
        0.7, 1.0, 1.0)
    fast = load_config(["method=dfd_fast"])
    assert fast.method.name == "dfd" and fast.backbone.pretrained is False


def test_learning_rates_and_cosine_schedule():
    model = build_method(load_config(["method=dfd_fast", "dataset.category=weave"]))
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert [g["lr"] for g in optimizer.param_groups] == [5e-4, 2e-4, 1e-4]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 1e-5, 1e-5]
    for _ in range(76):
        optimizer.step()
        scheduler.step()
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1:] == pytest.approx([4e-5, 4e-5])


def test_scores_do_not_depend_on_the_rest_of_the_batch():
    model = build_method(load_config(["method=dfd_fast", "dataset.category=weave"])).eval()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        together = model.predict_step({"image": x})
        alone = model.predict_step({"image": x[1:2]})
    assert torch.allclose(together["anomaly_map"][1:2], alone["anomaly_map"], atol=1e-5)
    assert torch.allclose(together["pred_score"][1:2], alone["pred_score"], atol=1e-5)


def test_two_shot_run_detects_synthetic_defects(tmp_path):
    cfg = load_config([
        "method=dfd_fast", "dataset.shots=2", "dataset.category=weave",
        "dataset.size=96", "dataset.n_test_good=10", "dataset.n_test_per_defect=4",
        "dataset.num_workers=0",
        f"output.root={tmp_path}", "output.report_images=0", "output.save_checkpoint=false",
        "trainer.enable_progress_bar=false",
    ])
    (result,) = run(cfg)
    assert result.metrics["image_auroc"] >= 0.70, result.metrics
    assert (result.run_dir / "train_files.txt").read_text().count("\n") == 2
    protocol = json.loads((result.run_dir / "protocol.json").read_text())
    assert protocol["shot_fill"] == "zero → zero"
    assert protocol["mask_rule"].startswith("nearest: binarised != 0")
