"""`afreq export` to ONNX and TorchScript: parity with predict_step for every method, `afreq
predict` on the exported file, and the errors a user can run into."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from scipy.stats import spearmanr

from anomaly_freq.config import build_method, load_config
from anomaly_freq.data.images import decode_image
from anomaly_freq.errors import AfreqError
from anomaly_freq.run.checkpoint import read_checkpoint, save_checkpoint
from anomaly_freq.run.engine import run
from anomaly_freq.run.export import FORMATS, export_checkpoint
from anomaly_freq.run.exported import load_torchscript, metadata_path, open_exported
from anomaly_freq.run.predict import predict_folder
from tests.conftest import run_cli

COMMON = ["dataset.category=weave", "dataset.size=96", "dataset.n_train=12",
          "dataset.n_test_good=6", "dataset.n_test_per_defect=2", "trainer.max_epochs=1",
          "dataset.num_workers=0", "output.report_images=0", "trainer.enable_progress_bar=false"]
# tiny widths; each method in the mode its presets export (OCR-GAN: the paper's uint8 split)
METHODS = {
    "freqstat": ["method=freqstat", "dataset.image_size=64", "eval.resolution=64"],
    "fair": ["method=fair_fast", "model.base_width=4", "dataset.image_size=64",
             "eval.resolution=64"],
    "dfd": ["method=dfd_fast", "dataset.shots=1", "dataset.shot_copies=4",
            "method.feature_dim=32", "method.gaussian_hidden=16", "method.vit_heads=2",
            "dataset.image_size=64", "eval.resolution=64"],
    "ocrgan": ["method=ocrgan", "model.ngf=4", "model.ndf=4", "dataset.batch_size=4",
               "dataset.image_size=32", "eval.resolution=32"],
}


@dataclass(frozen=True)
class Exported:
    method: str
    run_dir: Path
    files: dict[str, Path]  # format → exported file


def _train(name: str, root: Path, cache: Path) -> Path:
    with pytest.MonkeyPatch.context() as patch:  # the session's dataset cache (conftest)
        patch.setenv("AFREQ_CACHE", str(cache))
        cfg = load_config([*METHODS[name], *COMMON, f"output.root={root}"])
        return run(cfg)[0].run_dir


@pytest.fixture(scope="module", params=list(METHODS))
def exported(request, tmp_path_factory) -> Exported:
    """One tiny one-epoch run per method, exported to both formats."""
    cache = tmp_path_factory.getbasetemp() / "afreq-cache"
    run_dir = _train(request.param, tmp_path_factory.mktemp(request.param), cache)
    return Exported(request.param, run_dir,
                    {fmt: export_checkpoint(run_dir, fmt).path for fmt in FORMATS})


def _run_scores(run_dir: Path) -> dict[str, float]:
    rows = csv.DictReader((run_dir / "scores.csv").open())
    return {row["path"]: float(row["pred_score"]) for row in rows}


def _test_batch(run_dir: Path, cfg) -> torch.Tensor:
    images = [decode_image(Path(p), cfg.dataset.image_size, cfg.dataset.center_crop,
                           cfg.dataset.resize) for p in sorted(_run_scores(run_dir))]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)


def test_exports_reproduce_predict_step(exported):
    loaded = read_checkpoint(exported.run_dir / "model.pt")
    batch = _test_batch(exported.run_dir, loaded.cfg)
    with torch.no_grad():
        native = loaded.method.predict_step({"image": batch})
    for fmt, path in exported.files.items():
        amap, score = open_exported(path)(batch)
        assert amap.shape == native["anomaly_map"].shape, fmt
        torch.testing.assert_close(score, native["pred_score"], rtol=1e-4, atol=0, msg=fmt)
        torch.testing.assert_close(amap, native["anomaly_map"], rtol=0, atol=1e-3, msg=fmt)


def test_exports_rank_the_test_images_as_the_run_did(exported, tmp_path):
    run_scores = _run_scores(exported.run_dir)
    test_folder = Path(next(iter(run_scores))).parents[1]
    for fmt, path in exported.files.items():
        result = predict_folder(path, test_folder, tmp_path / fmt, expected_method=exported.method)
        assert len(result.paths) == len(run_scores) == 14
        by_path = dict(zip(map(str, result.paths), result.scores, strict=True))
        keys = sorted(run_scores)
        rho = spearmanr([run_scores[k] for k in keys], [by_path[k] for k in keys]).statistic
        assert rho > 0.99, (fmt, rho)
        assert len(list((tmp_path / fmt / "heatmaps").iterdir())) == 14
        assert result.verdicts is not None  # the run's calibration travelled with the export


def test_metadata_describes_input_outputs_and_calibration(exported):
    cfg = read_checkpoint(exported.run_dir / "model.pt").cfg
    calibration = json.loads((exported.run_dir / "calibration.json").read_text())
    for fmt, path in exported.files.items():
        meta = json.loads(metadata_path(path).read_text())
        side = cfg.dataset.image_size
        assert meta["format"] == fmt and meta["method"] == cfg.method.name
        assert meta["preset"] == cfg.method.preset
        assert (meta["image_size"], meta["center_crop"], meta["resize"]) == (
            side, cfg.dataset.center_crop, cfg.dataset.resize)
        assert meta["input"]["shape"] == ["N", 3, side, side]
        assert list(meta["outputs"]) == ["anomaly_map", "pred_score"]
        assert meta["calibration"]["threshold"] == calibration["threshold"]
        assert meta["calibration"]["map_range"] == calibration["map_range"]


# ------------------------------------------------------------------ the command line, errors


@pytest.fixture(scope="module")
def freqstat_run(tmp_path_factory) -> Path:
    cache = tmp_path_factory.getbasetemp() / "afreq-cache"
    return _train("freqstat", tmp_path_factory.mktemp("cli"), cache)


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_cli_export_then_predict_gives_the_native_scores_and_heatmaps(freqstat_run, tmp_path):
    images = Path(next(iter(_run_scores(freqstat_run)))).parents[1] / "good"
    out = tmp_path / "deploy" / "freqstat.onnx"
    done = run_cli(["export", f"checkpoint={freqstat_run}", "format=onnx", f"output={out}"],
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and metadata_path(out).is_file()
    assert "afreq predict checkpoint=" in done.stdout
    native, onnx = tmp_path / "native", tmp_path / "onnx"
    for checkpoint, folder in ((freqstat_run / "model.pt", native), (out, onnx)):
        done = run_cli(["predict", f"checkpoint={checkpoint}", f"images={images}",
                        f"output={folder}"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    expected, got = _rows(native / "scores.csv"), _rows(onnx / "scores.csv")
    assert [r["path"] for r in got] == [r["path"] for r in expected]
    assert [r["prediction"] for r in got] == [r["prediction"] for r in expected]
    np.testing.assert_allclose([float(r["pred_score"]) for r in got],
                               [float(r["pred_score"]) for r in expected], rtol=1e-4)
    assert sorted(p.name for p in (onnx / "heatmaps").iterdir()) == sorted(
        p.name for p in (native / "heatmaps").iterdir())


def test_a_missing_or_foreign_checkpoint_is_named(freqstat_run, tmp_path):
    with pytest.raises(AfreqError, match="nope.pt does not exist"):
        export_checkpoint(tmp_path / "nope.pt", "torchscript")
    payload = torch.load(freqstat_run / "model.pt", weights_only=True)
    payload["format"] = 0  # as another version would have written it
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(AfreqError, match=r"old.pt is not an afreq checkpoint \(format 1"):
        export_checkpoint(tmp_path / "old.pt", "torchscript")
    done = run_cli(["export", f"checkpoint={tmp_path / 'nope'}", "format=onnx"], cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "does not exist" in done.stderr


def test_formats_and_file_names_are_checked(freqstat_run, tmp_path):
    with pytest.raises(AfreqError, match="format=tflite is unknown; use format=onnx or"):
        export_checkpoint(freqstat_run, "tflite")
    with pytest.raises(AfreqError, match="must end in .onnx"):
        export_checkpoint(freqstat_run, "onnx", tmp_path / "model.pt")
    done = run_cli(["export", f"checkpoint={freqstat_run}"], cwd=tmp_path)
    assert done.returncode == 2 and "afreq export takes checkpoint=" in done.stderr


def test_a_method_that_cannot_be_exported_says_why(tmp_path):
    cfg = load_config(["method=ocrgan_fast", "method.cs_mode=random", "dataset.image_size=16",
                       "model.ngf=2", "model.ndf=2"])
    save_checkpoint(build_method(cfg), cfg, tmp_path / "model.pt")
    with pytest.raises(AfreqError, match="random channel selection .*cs_mode=learned or none"):
        export_checkpoint(tmp_path / "model.pt", "torchscript")
    assert not (tmp_path / "model.torchscript.pt").exists()


def test_an_op_the_exporter_cannot_take_is_one_line_and_writes_nothing(freqstat_run, tmp_path,
                                                                       monkeypatch):
    from anomaly_freq.run import export

    def unsupported(*args):
        raise RuntimeError("aten::weird_op has no symbolic\nlong trace")

    monkeypatch.setattr(export, "write_torchscript", unsupported)
    out = tmp_path / "model.pt"
    with pytest.raises(AfreqError, match="cannot be exported to torchscript: aten::weird_op "
                                         "has no symbolic; nothing was written"):
        export_checkpoint(freqstat_run, "torchscript", out)
    assert not out.exists() and not metadata_path(out).exists()


def test_without_the_export_extra_onnx_says_what_to_install(freqstat_run, tmp_path,
                                                            monkeypatch):
    onnx_file = export_checkpoint(freqstat_run, "onnx", tmp_path / "m.onnx").path
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(AfreqError, match=r"pip install 'anomaly_freq\[export\]'"):
        export_checkpoint(freqstat_run, "onnx", tmp_path / "again.onnx")
    with pytest.raises(AfreqError, match=r"pip install 'anomaly_freq\[export\]'"):
        predict_folder(onnx_file, tmp_path, tmp_path / "out")


def test_a_wrong_shape_gives_the_runtime_error_and_the_expected_shape(freqstat_run, tmp_path):
    files = {fmt: export_checkpoint(freqstat_run, fmt, tmp_path / f"m{suffix}").path
             for fmt, suffix in FORMATS.items()}
    wrong = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(files["onnx"]))
    with pytest.raises(Exception, match="(?i)invalid dimensions"):
        session.run(None, {"images": wrong})
    with pytest.raises(torch.jit.Error, match="expected images of shape N×3×64×64"):
        load_torchscript(files["torchscript"])(torch.from_numpy(wrong))
    images = Path(next(iter(_run_scores(freqstat_run)))).parent
    for path in files.values():
        meta = json.loads(metadata_path(path).read_text())
        meta["image_size"] = 32  # metadata that no longer fits the graph
        metadata_path(path).write_text(json.dumps(meta))
        with pytest.raises(AfreqError, match=r"rejected images of shape \[.*, 3, 32, 32\].*"
                                             r"expects float32 RGB images N×3×64×64"):
            predict_folder(path, images, tmp_path / "out")


def test_an_export_needs_its_metadata_of_this_version(freqstat_run, tmp_path):
    path = export_checkpoint(freqstat_run, "torchscript", tmp_path / "m.pt").path
    meta = json.loads(metadata_path(path).read_text())
    metadata_path(path).write_text(json.dumps({**meta, "export_format": 0}))
    with pytest.raises(AfreqError, match="m.pt.json was written by another afreq version"):
        open_exported(path)
    metadata_path(path).unlink()
    with pytest.raises(AfreqError, match="m.pt has no m.pt.json beside it"):
        open_exported(path)
    with pytest.raises(AfreqError, match="exported model .*gone.onnx does not exist"):
        open_exported(tmp_path / "gone.onnx")
