"""The run's threshold and colour range from normal images, and `afreq predict` applying them."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_freq.config import load_config
from anomaly_freq.data import Sample
from anomaly_freq.data.images import decode_image
from anomaly_freq.errors import AfreqError
from anomaly_freq.run import predict
from anomaly_freq.run.calibration import split_training_images
from anomaly_freq.run.checkpoint import load_checkpoint
from anomaly_freq.run.engine import run
from tests.conftest import TINY_SYNTHETIC, run_cli

SMALL = [*TINY_SYNTHETIC, "dataset.n_train=20", "dataset.category=washer"]


@pytest.fixture
def held_out(tmp_path):
    """A freqstat run with the default calibration: 2 of its 20 training images held out."""
    return run(load_config([*SMALL, f"output.root={tmp_path / 'runs'}"]))[0].run_dir


def _read(path):
    return json.loads(path.read_text())


def _training_images(run_dir):
    return run_dir.joinpath("train_files.txt").read_text().split()


def test_holdout_scores_images_never_trained_on(held_out):
    record = _read(held_out / "calibration.json")
    calibrated = [image["path"] for image in record["images"]]
    trained = _training_images(held_out)
    assert record["mode"] == "holdout" and not record["in_sample"]
    assert len(calibrated) == record["n_images"] == 2 and len(trained) == 18
    assert not set(calibrated) & set(trained)
    scores = [image["pred_score"] for image in record["images"]]
    assert record["threshold"] == pytest.approx(np.percentile(scores, 99))
    low, high = record["map_range"]
    assert low < high
    protocol = _read(held_out / "protocol.json")
    assert protocol["n_train_images"] == 18
    assert protocol["calibration"] == {k: v for k, v in record.items() if k != "images"}


def test_train_calibration_trains_on_every_image_in_sample(tmp_path, held_out):
    run_dir = run(load_config([*SMALL, "eval.calibration=train",
                               f"output.root={tmp_path}"]))[0].run_dir
    record = _read(run_dir / "calibration.json")
    trained = _training_images(run_dir)
    assert record["mode"] == "train" and record["in_sample"]
    assert len(trained) == 20 and [image["path"] for image in record["images"]] == trained
    assert set(trained) == set(_training_images(held_out)) | {
        image["path"] for image in _read(held_out / "calibration.json")["images"]}


def test_paper_presets_and_few_shot_runs_calibrate_on_their_training_images():
    assert load_config([]).eval.calibration == "holdout"
    for preset in ("fair", "dfd", "ocrgan", "fair_fast", "ocrgan_fast", "dfd_fast"):
        assert load_config([f"method={preset}"]).eval.calibration == "train", preset
    train = [Sample(path=f"/data/{i}.png", label=0, defect="good") for i in range(10)]
    few = split_training_images(load_config(["dataset.shots=4"]), train[:4])
    assert (few.mode, few.train, few.calibration) == ("train", train[:4], train[:4])
    assert "dataset.shots=4" in few.how


def test_the_held_out_draw_is_seeded_and_independent_of_listing_order():
    train = [Sample(path=f"/data/{i:02d}.png", label=0, defect="good") for i in range(30)]
    first = split_training_images(load_config(["seed=1"]), train)
    assert len(first.calibration) == 3 and len(first.train) == 27
    again = split_training_images(load_config(["seed=1"]), train[::-1])
    assert set(again.calibration) == set(first.calibration)
    assert set(split_training_images(load_config(["seed=2"]), train).calibration) != set(
        first.calibration)


@pytest.mark.parametrize(("overrides", "n", "message"), [
    (["eval.calibration=test"], 10, "eval.calibration=test is unknown"),
    (["eval.calibration_fraction=1.0"], 10, "eval.calibration_fraction=1.0 must lie between"),
    ([], 1, "1 training image.*set eval.calibration=train"),
])
def test_impossible_calibrations_name_the_key(overrides, n, message):
    train = [Sample(path=f"/data/{i}.png", label=0, defect="good") for i in range(n)]
    with pytest.raises(AfreqError, match=message):
        split_training_images(load_config(overrides), train)


def _new_images(folder, run_dir, record):
    """The held-out images and two test images (one normal, one anomalous) as new images."""
    folder.mkdir()
    for image in record["images"]:
        shutil.copy(image["path"], folder / f"held_{len(list(folder.iterdir()))}.png")
    rows = list(csv.DictReader((run_dir / "scores.csv").open()))
    for label in ("0", "1"):
        first = next(r["path"] for r in rows if r["label"] == label)
        shutil.copy(first, folder / f"test_{label}.png")
    return folder


def _capture_heatmaps(monkeypatch):
    drawn = []
    save = predict.save_figure
    monkeypatch.setattr(predict, "save_figure",
                        lambda fig, path: (drawn.append(fig), save(fig, path)))
    return drawn


def _overlay_range(fig):
    (overlay,) = [ax for ax in fig.axes if ax.get_title() == "anomaly map"]
    return overlay.get_images()[-1].get_clim()


def test_predict_calls_images_by_the_stored_threshold_on_the_stored_scale(held_out, tmp_path,
                                                                           monkeypatch):
    record = _read(held_out / "calibration.json")
    images = _new_images(tmp_path / "new", held_out, record)
    drawn = _capture_heatmaps(monkeypatch)
    result = predict.predict_folder(held_out / "model.pt", images, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    assert len(rows) == 4
    for row in rows:
        anomalous = float(row["pred_score"]) > record["threshold"]
        assert row["prediction"] == ("anomalous" if anomalous else "normal"), row
    stored = sorted(image["pred_score"] for image in record["images"])
    assert sorted(result.scores[:2]) == pytest.approx(stored, rel=1e-4)  # held_0, held_1
    assert result.verdicts == [row["prediction"] for row in rows]
    # a second call on one image colours it on the same stored range
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(images / "test_1.png", single)
    predict.predict_folder(held_out / "model.pt", single, tmp_path / "out_one")
    assert len(drawn) == 5
    for fig in drawn:
        assert _overlay_range(fig) == pytest.approx(tuple(record["map_range"]))
        assert [ax.get_label() for ax in fig.axes].count("<colorbar>") == 1
        assert "threshold" in fig.get_suptitle()
    lines = predict.describe(result)
    assert lines[0].startswith(f"threshold {record['threshold']:.4g}, the 99th percentile")
    assert lines[-1] == f"{result.verdicts.count('anomalous')} of 4 images anomalous"


def test_cli_predict_prints_a_verdict_per_image(held_out, tmp_path):
    images = tmp_path / "new"
    images.mkdir()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(images / "grey.png")
    done = run_cli(["predict", f"checkpoint={held_out / 'model.pt'}", f"images={images}",
                    f"output={tmp_path / 'out'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (row,) = csv.DictReader((tmp_path / "out" / "scores.csv").open())
    assert f"{row['prediction']:<9} " in done.stdout and "grey.png" in done.stdout
    assert "calibration images: 2 of the 20 training images" in done.stdout
    assert _read(tmp_path / "out" / "calibration.json") == _read(held_out / "protocol.json")[
        "calibration"]


def test_a_checkpoint_without_calibration_still_predicts(held_out, tmp_path, monkeypatch):
    payload = torch.load(held_out / "model.pt", weights_only=True)
    del payload["calibration"]
    torch.save(payload, tmp_path / "old.pt")
    images = _new_images(tmp_path / "new", held_out, _read(held_out / "calibration.json"))
    drawn = _capture_heatmaps(monkeypatch)
    result = predict.predict_folder(tmp_path / "old.pt", images, tmp_path / "out")
    assert result.verdicts is None and result.calibration is None
    with (tmp_path / "out" / "scores.csv").open() as handle:
        assert next(csv.reader(handle)) == ["path", "pred_score"]
    assert not (tmp_path / "out" / "calibration.json").exists()
    method, _ = load_checkpoint(tmp_path / "old.pt")
    with torch.no_grad():
        maps = [method.predict_step({"image": torch.from_numpy(decode_image(p, 64)).permute(
            2, 0, 1)[None].float() / 255})["anomaly_map"] for p in sorted(images.iterdir())]
    own = (min(float(m.min()) for m in maps), max(float(m.max()) for m in maps))
    assert result.scale == pytest.approx(own, rel=1e-5)
    lines = predict.describe(result)
    assert lines[0].startswith("this checkpoint stores no threshold")
    assert len(lines) == 1 + 4  # no count of anomalous images
    for fig in drawn:
        assert _overlay_range(fig) == pytest.approx(result.scale)
        assert "no stored threshold" in fig.get_suptitle()
