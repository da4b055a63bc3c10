"""FAIR: network size, anomaly function against a NumPy/OpenCV transcription, loss, input
pipeline, corruptions, configuration, and a real training run through the engine."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import anomaly_freq.methods.fair  # noqa: F401  (registers "fair")
from anomaly_freq.config import build_method, load_config
from anomaly_freq.errors import AfreqError
from anomaly_freq.freq import butterworth_highpass
from anomaly_freq.methods.fair import FAIR
from anomaly_freq.methods.fair.anomaly import anomaly_map, restoration_loss, ssim
from anomaly_freq.methods.fair.model import lr_milestones
from anomaly_freq.methods.fair.network import RestorationNet, parameter_count
from anomaly_freq.methods.fair.synthesis import Corruptions
from anomaly_freq.parameters import count_parameters
from anomaly_freq.run.checkpoint import load_checkpoint, save_checkpoint
from anomaly_freq.run.engine import run


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: two-thread CPU work slows down many-fold when other processes share
    the (two) cores, and these tiny networks gain little from a second thread anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ network


@pytest.mark.parametrize(("width", "expected"),
                         [(128, 69_046_275), (64, 17_270_787), (32, 4_322_307)])
def test_parameter_counts_match_the_spec(width, expected):
    with torch.device("meta"):  # shapes only, no 276 MB allocation for c = 128
        net = RestorationNet(in_channels=1, out_channels=3, base_width=width)
    assert count_parameters(net) == expected
    assert parameter_count(1, width) == expected
    assert round(expected / 2**20, 1) == {128: 65.8, 64: 16.5, 32: 4.1}[width]  # Table 5 "MB"


def test_network_shapes_and_unbounded_output():
    net = RestorationNet(in_channels=2, base_width=4).eval()
    out = net(torch.randn(2, 2, 32, 48))
    assert out.shape == (2, 3, 32, 48)
    assert not any(isinstance(m, torch.nn.Sigmoid | torch.nn.Tanh) for m in net.modules())


# ------------------------------------------------------------------ anomaly function reference

PREWITT_X = np.array([[1.0, 0.0, -1.0]] * 3) / 3


def _ref_gms(a: np.ndarray, b: np.ndarray, c: float = 0.0026) -> np.ndarray:
    """Per-channel gradient magnitude similarity of H×W×C arrays (zero border)."""
    def magnitude(img):
        out = np.empty_like(img)
        for ch in range(img.shape[2]):
            gx = cv2.filter2D(img[..., ch], cv2.CV_64F, PREWITT_X, borderType=cv2.BORDER_CONSTANT)
            gy = cv2.filter2D(img[..., ch], cv2.CV_64F, PREWITT_X.T,
                              borderType=cv2.BORDER_CONSTANT)
            out[..., ch] = np.sqrt(gx**2 + gy**2 + 1e-12)
        return out

    g1, g2 = magnitude(a), magnitude(b)
    return (2 * g1 * g2 + c) / (g1**2 + g2**2 + c + 1e-12)


def _ref_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of H×W×3 sRGB in float64: sRGB linearisation, XYZ (D65), CIE f(t)."""
    power = ((np.clip(rgb, 0.04045, None) + 0.055) / 1.055) ** 2.4
    linear = np.where(rgb > 0.04045, power, rgb / 12.92)
    to_xyz = np.array([[0.412453, 0.357580, 0.180423],
                       [0.212671, 0.715160, 0.072169],
                       [0.019334, 0.119193, 0.950227]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(np.clip(xyz, 0.008856, None)), 7.787 * xyz + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def _ref_anomaly(restored: np.ndarray, original: np.ndarray, bgr_quirk: bool = True,
                 color: bool = True) -> np.ndarray:
    """FAIR's map (fair.md §8) for one H×W×3 RGB pair, transcribed independently."""
    h, w, _ = original.shape
    fine = _ref_gms(restored, original)
    pool = lambda x: x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))  # noqa: E731
    coarse = _ref_gms(pool(restored), pool(original))
    coarse = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)  # half-pixel centres
    amap = (1 - (fine + coarse) / 2).mean(axis=2)
    if color:
        order = slice(None, None, -1) if bgr_quirk else slice(None)
        lab_r, lab_o = _ref_lab(restored[..., order]), _ref_lab(original[..., order])
        amap = amap + 3e-4 * ((lab_r[..., 1:] - lab_o[..., 1:]) ** 2).sum(axis=2)
    return cv2.boxFilter(amap, -1, (21, 21), normalize=True, borderType=cv2.BORDER_CONSTANT)


def _pair(seed: int = 0, h: int = 48, w: int = 64):
    rng = np.random.default_rng(seed)
    original = rng.random((2, h, w, 3))
    # a restoration: close to the original, with a defect-like patch, slightly out of [0, 1]
    restored = original + 0.05 * rng.standard_normal(original.shape)
    restored[:, 10:20, 20:35] = rng.random((2, 10, 15, 3)) * 1.1 - 0.05
    return restored, original


@pytest.mark.parametrize(("quirk", "color"), [(True, True), (False, True), (True, False)])
def test_anomaly_map_matches_reference_transcription(quirk, color):
    restored, original = _pair()
    got = anomaly_map(torch.from_numpy(restored).permute(0, 3, 1, 2),
                      torch.from_numpy(original).permute(0, 3, 1, 2),
                      bgr_quirk=quirk, color_term=color)
    assert got.shape == (2, 1, 48, 64)
    for i in range(2):
        expected = _ref_anomaly(restored[i], original[i], quirk, color)
        np.testing.assert_allclose(got[i, 0].numpy(), expected, rtol=0, atol=1e-5)


def test_anomaly_map_in_float32_is_close_to_reference():
    restored, original = _pair(1)
    got = anomaly_map(torch.from_numpy(restored).permute(0, 3, 1, 2).float(),
                      torch.from_numpy(original).permute(0, 3, 1, 2).float())
    np.testing.assert_allclose(got[0, 0].numpy(), _ref_anomaly(restored[0], original[0]),
                               rtol=1e-4, atol=1e-5)


def test_bgr_quirk_changes_the_colour_term_only():
    restored, original = (torch.from_numpy(a).permute(0, 3, 1, 2) for a in _pair(2))
    quirk = anomaly_map(restored, original, bgr_quirk=True)
    plain = anomaly_map(restored, original, bgr_quirk=False)
    assert (quirk - plain).abs().max() > 1e-3
    grad_only = dict(color_term=False)
    assert torch.equal(anomaly_map(restored, original, bgr_quirk=True, **grad_only),
                       anomaly_map(restored, original, bgr_quirk=False, **grad_only))


def test_reference_lab_agrees_with_opencv():
    """Anchor the NumPy Lab transcription to OpenCV (its spline gamma differs by < 0.5)."""
    rgb = np.random.default_rng(3).random((32, 32, 3)).astype(np.float32)
    ours = _ref_lab(rgb.astype(np.float64))
    theirs = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).astype(np.float64)
    np.testing.assert_allclose(ours, theirs, atol=0.5)


# ------------------------------------------------------------------ loss


def _ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """DRAEM's SSIM for H×W×C: 11×11 Gaussian σ = 1.5, zero border, L = 1, mean of the map."""
    g = cv2.getGaussianKernel(11, 1.5, cv2.CV_64F)
    window = g @ g.T

    def blur(x):
        return cv2.filter2D(x, cv2.CV_64F, window, borderType=cv2.BORDER_CONSTANT)

    maps = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        maps.append(((2 * mx * my + c1) * (2 * cov + c2))
                    / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(maps))


def test_loss_is_mse_plus_one_minus_ssim_not_halved():
    restored, original = _pair(4)
    r, o = (torch.from_numpy(a).permute(0, 3, 1, 2) for a in (restored, original))
    ref_ssim = np.mean([_ref_ssim(restored[i], original[i]) for i in range(2)])
    assert float(ssim(r, o)) == pytest.approx(ref_ssim, abs=1e-10)
    expected = np.mean((restored - original) ** 2) + 1 - ref_ssim
    assert float(restoration_loss(r, o)) == pytest.approx(expected, abs=1e-10)
    assert float(restoration_loss(o, o)) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ method, input, corruptions

TINY = ["model.base_width=4", "dataset.image_size=64", "eval.resolution=64"]


def _method(*overrides: str) -> FAIR:
    return build_method(load_config(["method=fair", *TINY, *overrides]))


def test_highpass_input_is_the_shared_butterworth_filter_with_scaled_cutoff():
    images = torch.rand(2, 3, 64, 64)
    fair = _method()
    assert fair.d0 == pytest.approx(30 * 64 / 256)
    x = fair.network_input(images)
    assert x.shape == (2, 1, 64, 64)
    torch.testing.assert_close(x, butterworth_highpass(images, d0=7.5, order=2))
    assert x.mean(dim=(-2, -1)).abs().max() < 1e-5  # the DC term is gone
    unscaled = _method("method.filter.scale_d0=false", "method.filter.kind=ideal")
    assert unscaled.d0 == 30.0


@pytest.mark.parametrize(("kind", "channels"),
                         [("sobel", 2), ("laplacian", 1), ("grey", 1), ("rgb", 3)])
def test_input_variants_set_the_network_input_channels(kind, channels):
    fair = _method(f"method.input={kind}")
    assert fair.network.encoder[0][0][0].in_channels == channels
    assert fair.network_input(torch.rand(1, 3, 64, 64)).shape[1] == channels
    assert fair(torch.rand(2, 3, 64, 64)).shape == (2, 3, 64, 64)


def test_sobel_x_feeds_gx_twice():
    x = _method("method.input=sobel", "method.sobel.axes=x").network_input(torch.rand(1, 3, 32, 32))
    assert x.shape[1] == 2 and torch.equal(x[:, 0], x[:, 1])


def test_predict_step_follows_the_contract():
    fair = _method().eval()
    with torch.no_grad():
        out = fair.predict_step({"image": torch.rand(3, 3, 64, 64)})
    assert out["anomaly_map"].shape == (3, 1, 64, 64)
    torch.testing.assert_close(out["pred_score"], out["anomaly_map"].amax(dim=(1, 2, 3)))


def test_corruption_mix_follows_the_spec_probabilities():
    corrupt = Corruptions(64, seed=0, rotate_prob=0.0)
    clean = torch.rand(200, 3, 64, 64) * 0.8 + 0.1
    corrupted, target, mask = corrupt(clean)
    assert torch.equal(target, clean)  # the target is the clean image
    changed = (corrupted != clean).flatten(1).any(1).float()
    assert 0.35 < changed.mean() < 0.65  # 50 % clean in expectation
    assert torch.equal(mask.flatten(1).amax(1) > 0, changed > 0)


def test_rotation_is_shared_by_input_and_target():
    corrupt = Corruptions(64, seed=1, rotate_prob=1.0, cutpaste_prob=0.0, texture_prob=0.0)
    clean = torch.rand(4, 3, 64, 64) * 0.8 + 0.1
    corrupted, target, _ = corrupt(clean)
    assert torch.equal(corrupted, target) and not torch.equal(target, clean)


def test_fair_nodtd_uses_training_images_as_textures():
    corrupt = Corruptions(32, seed=0, texture_source="training", cutpaste_prob=0.0,
                          texture_prob=1.0, rotate_prob=0.0)
    corrupted, _, mask = corrupt(torch.rand(8, 3, 32, 32))
    assert corrupted.shape == (8, 3, 32, 32) and mask.sum() > 0


@pytest.mark.parametrize(("override", "needle"), [
    ("method.input=wavelet", "method.input"), ("method.filter.kind=box", "filter.kind"),
    ("method.cutpaste_mode=huge", "cutpaste_mode"), ("method.texture_source=web", "texture"),
    ("dataset.image_size=72", "divisible by 16")])
def test_bad_options_raise_a_clear_error(override, needle):
    with pytest.raises(AfreqError, match=needle):
        _method(override)


def test_state_dict_holds_only_the_network_and_round_trips(tmp_path):
    cfg = load_config(["method=fair", *TINY])
    fair = build_method(cfg).eval()
    assert all(key.startswith("network.") for key in fair.state_dict())
    save_checkpoint(fair, cfg, tmp_path / "model.pt")
    loaded, _ = load_checkpoint(tmp_path / "model.pt", expected_method="fair")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_step({"image": images})["anomaly_map"],
                                   fair.predict_step({"image": images})["anomaly_map"])


def test_config_epochs_per_dataset_and_fast_preset():
    assert load_config(["method=fair"]).model.base_width == 128
    assert load_config(["method=fair", "dataset=mvtec_ad"]).trainer.max_epochs == 800
    assert load_config(["method=fair", "dataset=visa"]).trainer.max_epochs == 400
    fast = load_config(["method=fair_fast"])
    assert fast.method.name == "fair" and fast.model.base_width < 128
    assert fast.method.filter.kind == "butterworth"  # everything else comes from fair.yaml
    assert load_config(["method=fair_fast", "dataset=visa"]).trainer.max_epochs == 15


def test_learning_rate_drops_at_80_and_90_percent_of_the_epochs():
    fair = _method()
    optimizer = fair.configure_optimizers()
    scheduler = optimizer["lr_scheduler"]["scheduler"]
    assert sorted(scheduler.milestones) == [640, 720]  # 800 epochs without a trainer
    assert scheduler.gamma == 0.2 and optimizer["lr_scheduler"]["interval"] == "epoch"


def test_short_runs_keep_the_learning_rate():
    assert lr_milestones(1) == [] and lr_milestones(2) == [1, 1] and lr_milestones(-1) == []
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, lr_milestones(1), gamma=0.2)
    assert scheduler.get_last_lr() == [1e-4]


# ------------------------------------------------------------------ training through the engine

# washer at 64×64 with c = 16: about 200 steps of training on two CPU cores
TRAIN = ["method=fair_fast", "dataset.category=washer", "dataset.size=128", "dataset.n_train=64",
         "dataset.n_test_good=12", "dataset.n_test_per_defect=3", "dataset.image_size=64",
         "eval.resolution=64", "dataset.num_workers=0", "trainer.max_epochs=20",
         "trainer.enable_progress_bar=false", "output.report_images=0",
         "output.save_checkpoint=false"]


def test_fair_fast_learns_to_detect_synthetic_defects(tmp_path):
    (result,) = run(load_config([*TRAIN, f"output.root={tmp_path}"]))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["image_auroc"] >= 0.75, metrics


def test_nan_loss_stops_training_without_a_result(tmp_path):
    cfg = load_config([*TRAIN, f"output.root={tmp_path}", "method.lr=1e30",
                       "trainer.max_epochs=3"])
    with pytest.raises(AfreqError, match="diverged"):
        run(cfg)
    (run_dir,) = (tmp_path / "fair" / "synthetic" / "washer").iterdir()
    assert not (run_dir / "metrics.json").exists()
    assert "diverged" in (run_dir / "error.txt").read_text()


def test_ssim_range_code_follows_the_official_rule():
    target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    restored = target.clone()
    restored[0, 0, 0, 0] = -0.7  # one pixel below −0.5: the code switches to L = 2
    code = restoration_loss(restored, target, "code")
    expected = torch.nn.functional.mse_loss(restored, target) + (
        1 - ssim(restored, target, data_range=2.0))
    assert float(code) == pytest.approx(float(expected), abs=1e-12)
    assert float(code) != pytest.approx(float(restoration_loss(restored, target)), abs=1e-9)
    assert restoration_loss(target, target, "code") == restoration_loss(target, target)
    assert load_config(["method=fair"]).method.ssim_range == "code"
    assert load_config(["method=fair_fast"]).method.ssim_range == "fixed"
    with pytest.raises(AfreqError, match="method.ssim_range"):
        _method("method.ssim_range=dynamic")
