"""Checkpoints saved by runs, reloaded safely, and `afreq predict` on new images."""

import csv

import pytest
import torch
from PIL import Image

from anomaly_freq.config import load_config
from anomaly_freq.data.images import decode_image
from anomaly_freq.errors import AfreqError
from anomaly_freq.run.checkpoint import load_checkpoint
from anomaly_freq.run.engine import run
from tests.conftest import TINY_SYNTHETIC, run_cli


@pytest.fixture
def trained(tmp_path):
    cfg = load_config(["dataset.category=washer", f"output.root={tmp_path / 'runs'}",
                       *TINY_SYNTHETIC])
    return run(cfg)[0]


def test_checkpoint_reproduces_the_run_scores(trained):
    method, cfg = load_checkpoint(trained.run_dir / "model.pt", expected_method="freqstat")
    assert cfg.dataset.category == "washer"
    rows = list(csv.DictReader((trained.run_dir / "scores.csv").open()))
    image = torch.from_numpy(decode_image(rows[0]["path"], cfg.dataset.image_size)).permute(2, 0, 1)
    with torch.no_grad():
        score = method.predict_step({"image": image[None].float() / 255})["pred_score"]
    assert score.item() == pytest.approx(float(rows[0]["pred_score"]), rel=1e-5)


def test_a_run_folder_stands_for_its_model_pt(trained):
    from_folder, _ = load_checkpoint(trained.run_dir)
    from_file, _ = load_checkpoint(trained.run_dir / "model.pt")
    assert from_folder.state_dict().keys() == from_file.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(from_folder.state_dict().values(),
                                                 from_file.state_dict().values(), strict=True))
    with pytest.raises(AfreqError, match="model.pt does not exist"):
        load_checkpoint(trained.run_dir / "logs")


def test_checkpoint_errors(trained, tmp_path):
    path = trained.run_dir / "model.pt"
    with pytest.raises(AfreqError, match="trained with method 'freqstat' .*, not 'fair'"):
        load_checkpoint(path, expected_method="fair")
    payload = torch.load(path, weights_only=True)
    payload["config"]["method"]["preset"] = "freqstat_fast"
    torch.save(payload, tmp_path / "preset.pt")
    load_checkpoint(tmp_path / "preset.pt", expected_method="freqstat_fast")  # method=<preset>
    payload["config"]["dataset"]["image_size"] = 32  # a different geometry
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(AfreqError, match="does not fit method 'freqstat'"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AfreqError, match="not a readable afreq checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_cli_predict_writes_scores_and_heatmaps(trained, tmp_path):
    images = tmp_path / "new"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (80, 80), (40 * i, 90, 120)).save(images / f"{i}.png")
    Image.new("RGB", (80, 80), (200, 90, 120)).save(images / "0.jpg")  # same stem as 0.png
    out = tmp_path / "pred"
    result = run_cli(["predict", f"checkpoint={trained.run_dir / 'model.pt'}",
                      f"images={images}", f"output={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list(csv.DictReader((out / "scores.csv").open()))) == 4
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == ["0.jpg.png", "0.png",
                                                                     "1.png", "2.png"]
    bad = run_cli(["predict", "checkpoint=nope.pt", f"images={images}"], cwd=tmp_path)
    assert bad.returncode == 2 and "nope.pt does not exist" in bad.stderr


def test_checkpoint_of_a_pretrained_backbone_reloads_offline(tmp_path):
    """A checkpoint carries its backbone weights, so reloading never asks timm for them."""
    cfg = load_config(["method=dfd_fast", "dataset.shots=1", "dataset.shot_copies=2",
                       "trainer.max_epochs=1", "dataset.category=weave", "dataset.size=64",
                       "dataset.n_train=4", "dataset.n_test_good=2", "dataset.n_test_per_defect=1",
                       f"output.root={tmp_path}", "trainer.enable_progress_bar=false"])
    run_dir = run(cfg)[0].run_dir
    payload = torch.load(run_dir / "model.pt", weights_only=True)
    payload["config"]["backbone"].update(pretrained=True, weights="/nonexistent/weights.pth")
    torch.save(payload, tmp_path / "pretrained.pt")
    method, rebuilt = load_checkpoint(tmp_path / "pretrained.pt")
    assert rebuilt.backbone.pretrained is False
    original = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    for key, value in method.state_dict().items():
        assert torch.equal(value, original[key])
