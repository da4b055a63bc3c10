"""End-to-end runs: the CLI, run folders, reproducibility, errors and interruptions."""

import json
import os
import stat

import pytest
import torch

from anomaly_freq import registry
from anomaly_freq.config import load_config
from anomaly_freq.contract import AnomalyModule
from anomaly_freq.run.engine import run
from tests.conftest import TINY_SYNTHETIC, run_cli


def test_cli_run_writes_a_complete_run_folder(tmp_path):
    result = run_cli(["run", "dataset.category=granite", *TINY_SYNTHETIC], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "image AUROC" in result.stdout and "pixel AUROC" in result.stdout
    assert "preset freqstat: dataset.image_size=64 dataset.resize=pil" in result.stdout
    (run_dir,) = (tmp_path / "runs" / "freqstat" / "synthetic" / "granite").iterdir()
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.json", "scores.csv", "protocol.json",
            "environment.json"} <= names
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.5 < metrics["image_auroc"] <= 1 and 0.5 < metrics["pixel_auroc"] <= 1
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["seed"] == 0 and env["packages"]["torch"]
    rows = (run_dir / "scores.csv").read_text().splitlines()
    assert rows[0] == "path,category,defect,label,pred_score"
    assert len(rows) == 1 + 6 + 2 * 4
    assert "category: granite" in (run_dir / "config.yaml").read_text()


def test_all_categories_print_a_table(tmp_path):
    result = run_cli(["run", "dataset.category=all", *TINY_SYNTHETIC], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("weave", "granite", "washer", "chip", "mean"):
        assert name in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["method=nosuch"], "valid methods: "),
     (["dataset.nosuchkey=1"], "valid keys under 'dataset'"),
     (["dataset.category=nosuch"], "valid: weave, granite, washer, chip"),
     (["trainer.max_epochs=many"], "expects an integer"),
     (["dataset.center_crop=48", "eval.resolution=original"],
      "cannot score dataset.center_crop=48")],
)
def test_bad_input_gives_one_line_error_without_traceback(tmp_path, args, needle):
    result = run_cli(["run", *args], cwd=tmp_path)
    assert result.returncode != 0
    err = result.stderr.strip()
    assert needle in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_same_seed_same_metrics(tmp_path):
    cfg = load_config(["dataset.category=chip", f"output.root={tmp_path}", *TINY_SYNTHETIC])
    first, second = run(cfg)[0], run(cfg)[0]
    assert first.run_dir != second.run_dir
    assert first.metrics == second.metrics
    assert (first.run_dir / "scores.csv").read_text() == (second.run_dir / "scores.csv").read_text()


def test_freqstat_detects_synthetic_defects(tmp_path):
    cfg = load_config([
        "dataset.size=128", "dataset.image_size=128", "eval.resolution=128",
        "dataset.n_train=30", "dataset.n_test_good=10", "dataset.n_test_per_defect=4",
        f"output.root={tmp_path}", "trainer.enable_progress_bar=false",
    ])
    results = run(cfg)
    assert len(results) == 4
    for r in results:
        assert r.metrics["image_auroc"] >= 0.9, (r.category, r.metrics)
        assert r.metrics["pixel_auroc"] >= 0.9, (r.category, r.metrics)


class _Failing(AnomalyModule):
    error: type[BaseException] = RuntimeError

    def configure_optimizers(self):
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    def training_step(self, batch, batch_idx):
        raise self.error("boom")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_run_leaves_no_metrics(tmp_path, error):
    name = f"failing_{error.__name__.lower()}"
    registry.register_method(name)(type(name, (_Failing,), {"error": error}))
    try:
        cfg = load_config([f"method={name}", "dataset.category=weave",
                           f"output.root={tmp_path}", *TINY_SYNTHETIC])
        with pytest.raises(error):
            run(cfg)
    finally:
        registry._METHODS.pop(name)
    (run_dir,) = (tmp_path / name / "synthetic" / "weave").iterdir()
    assert not (run_dir / "metrics.json").exists()
    assert "boom" in (run_dir / "error.txt").read_text()


def test_every_file_a_run_writes_takes_the_umask_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("AFREQ_CACHE", str(tmp_path / "cache"))  # generated data, decoded images
    cfg = load_config(["dataset.category=granite", *TINY_SYNTHETIC, "dataset.cache=disk",
                       "output.report_images=2", "output.save_checkpoint=true",
                       "dataset.num_workers=0", f"output.root={tmp_path / 'runs'}"])
    old = os.umask(0o022)
    try:
        (result,) = run(cfg)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".json", ".csv", ".yaml", ".png", ".pt", ".md", ".npy"} <= kinds, kinds
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files
            if stat.S_IMODE(p.stat().st_mode) != 0o644} == {}
    assert not [p for p in tmp_path.rglob("*.tmp*")]  # no temporary file left behind
    assert (result.run_dir / "model.pt").exists()
