"""The unified setting: one model for several categories, each category scored apart."""

import json
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from anomaly_freq import registry
from anomaly_freq.config import build_method, load_config
from anomaly_freq.data.datamodule import SampleDataset
from anomaly_freq.errors import AfreqError
from anomaly_freq.run.engine import run, with_category
from anomaly_freq.run.grid_table import sweep_table
from anomaly_freq.run.results import group_runs
from anomaly_freq.run.rundir import config_hash
from anomaly_freq.run.store import COLUMNS, load_results
from anomaly_freq.run.sweep import expand, load_sweep, pending
from anomaly_freq.run.tables import cross_method_blocks, to_markdown, unified_points, write_tables
from anomaly_freq.run.unified import requested, unified_config
from tests.conftest import TINY_SYNTHETIC, run_cli

PAIR = "dataset.category=[granite,washer]"
UNIFIED = "dataset.setting=unified"


def _unified_dir(root, method="freqstat", dataset="synthetic"):
    (run_dir,) = (root / method / dataset / "unified").iterdir()
    return run_dir


def test_freqstat_trains_one_model_and_scores_each_category(tmp_path):
    results = run(load_config([*TINY_SYNTHETIC, PAIR, UNIFIED, f"output.root={tmp_path}"]))
    assert [r.category for r in results] == ["granite", "washer"]
    for r in results:
        assert r.metrics["image_auroc"] >= 0.8 and r.metrics["pixel_auroc"] >= 0.8, r
    run_dir = _unified_dir(tmp_path)
    assert list((tmp_path / "freqstat" / "synthetic").iterdir()) == [run_dir.parent]
    assert {"config.yaml", "model.pt", "calibration.json", "protocol.json", "report.md",
            "train_files.txt"} <= {p.name for p in run_dir.iterdir()}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["setting"] == "unified" and list(metrics["categories"]) == ["granite", "washer"]
    for r in results:
        folder = run_dir / "categories" / r.category
        assert r.run_dir == folder
        assert json.loads((folder / "metrics.json").read_text()) == {"category": r.category,
                                                                     **r.metrics}
        assert metrics["categories"][r.category] == r.metrics
        rows = (folder / "scores.csv").read_text().splitlines()[1:]
        assert len(rows) == 6 + 2 * 4 and all(f",{r.category}," in row for row in rows)
        assert (folder / "report.md").exists()
    for name, value in metrics["mean"].items():
        assert math.isclose(value, (results[0].metrics[name] + results[1].metrics[name]) / 2)
    protocol = json.loads((run_dir / "protocol.json").read_text())
    assert protocol["setting"] == "unified" and protocol["categories"] == ["granite", "washer"]
    assert protocol["category"] == "unified" and protocol["n_test_images"] == 2 * 14
    train = (run_dir / "train_files.txt").read_text().splitlines()
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert len(train) + calibration["n_images"] == 2 * 12  # one threshold, pooled images
    assert {"granite", "washer"} == {p.split("/")[-4] for p in train}
    assert "| **mean** |" in (run_dir / "report.md").read_text()


def test_few_shot_draws_shots_per_category(tmp_path):
    run(load_config([*TINY_SYNTHETIC, PAIR, UNIFIED, "dataset.shots=2", "output.report_images=0",
                     f"output.root={tmp_path}"]))
    train = (_unified_dir(tmp_path) / "train_files.txt").read_text().splitlines()
    assert sorted(p.split("/")[-4] for p in train) == ["granite", "granite", "washer", "washer"]


def test_tiny_fair_learns_both_categories_with_one_model(tmp_path):
    cfg = load_config(["method=fair_fast", PAIR, UNIFIED, "dataset.size=96", "dataset.n_train=16",
                       "dataset.n_test_good=10", "dataset.n_test_per_defect=3",
                       "dataset.image_size=64", "eval.resolution=64", "dataset.num_workers=0",
                       "trainer.max_epochs=10", "trainer.enable_progress_bar=false",
                       "output.report_images=0", f"output.root={tmp_path}"])
    results = run(cfg)
    assert len(results) == 2 and len(list((tmp_path / "fair").rglob("model.pt"))) == 1
    for r in results:
        assert r.metrics["image_auroc"] >= 0.75 and r.metrics["pixel_auroc"] >= 0.85, r


METHODS = {"freqstat": [], "fair_fast": ["model.base_width=4"], "dfd_fast": [],
           "ocrgan_fast": []}


@pytest.mark.parametrize("preset", METHODS)
def test_no_category_label_reaches_the_scores(preset, tmp_path):
    cfg = with_category(load_config([f"method={preset}", *TINY_SYNTHETIC, *METHODS[preset]]),
                        "unified")
    source = registry.create_dataset("synthetic", cfg)
    samples = {c: source.samples(c)[1][-3:] for c in ("granite", "washer")}
    owner = {s.path: c for c, listed in samples.items() for s in listed}
    data = SampleDataset([*samples["granite"], *samples["washer"]], owner,
                         cfg.dataset.image_size)
    batch = default_collate([data[i] for i in range(len(data))])
    assert batch["category"] == ["granite"] * 3 + ["washer"] * 3
    torch.manual_seed(0)
    method = build_method(cfg).eval()
    if preset == "freqstat":  # statistics from the batch itself stand in for training
        method.on_train_epoch_start()
        method.training_step(batch, 0)
        method.prepare_for_inference()
    outputs = []
    for labels in (batch["category"], ["washer"] * 6, ["other"] * 6):
        method.on_predict_start()
        with torch.no_grad():
            outputs.append(method.predict_step({**batch, "category": labels}, 0))
    for relabelled in outputs[1:]:
        for key, value in outputs[0].items():
            assert torch.equal(relabelled[key], value), key


def test_dfd_takes_one_foreground_for_the_whole_run():
    mvtec = load_config(["method=dfd_fast", "dataset=mvtec_ad", "dataset.category=bottle"])
    assert build_method(mvtec).synth.foreground == "below"  # the per-category table
    assert build_method(with_category(mvtec, "unified")).synth.foreground == "all"
    chosen = with_category(load_config(["method=dfd_fast", "dataset=mvtec_ad",
                                        "+method.foreground.unified=above"]), "unified")
    assert build_method(chosen).synth.foreground == "above"


def test_category_lists_have_one_spelling():
    assert requested("all") == "all"
    assert requested("[granite, washer]") == requested('["granite", "washer"]') == requested(
        "granite,washer") == ["granite", "washer"]
    assert requested("washer") == ["washer"]
    spellings = ["[granite,washer]", '["granite", "washer"]', "granite,washer"]
    hashes = {config_hash(unified_config(load_config([f"dataset.category={s}", UNIFIED])))
              for s in spellings}
    assert len(hashes) == 1


def test_setting_is_part_of_the_experiment_but_keeps_older_hashes():
    cfg = load_config(["dataset.category=weave"])
    tree = OmegaConf.to_container(cfg)
    del tree["dataset"]["setting"]  # a run made before the key existed
    assert config_hash(OmegaConf.create(tree)) == config_hash(cfg)
    assert config_hash(load_config(["dataset.category=weave", UNIFIED])) != config_hash(cfg)


@pytest.mark.parametrize(("args", "needle"), [
    (["dataset.setting=joint"], "dataset.setting=joint is unknown; valid: per_category, unified"),
    ([UNIFIED, "eval.test_every_n_epochs=1"], "set eval.test_every_n_epochs=0 with"),
    ([UNIFIED, "dataset.category=[granite,nosuch]"], "unknown category 'nosuch'"),
])
def test_bad_settings_give_one_line(tmp_path, args, needle):
    with pytest.raises(AfreqError) as caught:
        run(load_config([*TINY_SYNTHETIC, *args, f"output.root={tmp_path}"]))
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # failed before any folder


SWEEP = """
name: mine/settings
overrides: [dataset=synthetic, {tiny}, "output.root={root}", output.report_images=0]
grid:
  dataset.setting: [per_category, unified]
  dataset.category: [granite, washer]
  seed: [0]
"""


def test_results_and_tables_keep_the_settings_apart(tmp_path):
    root = tmp_path / "runs"
    path = tmp_path / "settings.yaml"
    path.write_text(SWEEP.format(tiny=", ".join(TINY_SYNTHETIC), root=root))
    points = expand(load_sweep(path))
    assert [(p.category, p.scored) for p in points] == [
        ("granite", ("granite",)), ("washer", ("washer",)),
        ("unified", ("granite", "washer"))]
    for p in points:  # what `afreq sweep` runs, point by point
        run(load_config(list(p.overrides)))
    assert pending(points) == ([], points)  # the runs' hashes are the points'

    frame = load_results(root)
    unified = frame[frame["setting"] == "unified"]
    assert set(unified["category"]) == {"granite", "washer"}
    assert unified["config_hash"].nunique() == 1 and frame["config_hash"].nunique() == 3
    groups = group_runs(frame)
    assert "setting" in groups.columns and len(groups.rows) == 4
    shown = groups.rows.set_index(["category", "setting"])["image_auroc_mean"]
    for _, row in unified[unified["metric"] == "image_auroc"].iterrows():
        assert shown[row["category"], "unified"] == row["value"]

    blocks, rows = sweep_table(load_sweep(path), points, frame)
    text = to_markdown(blocks[:1])
    assert "| dataset.setting | granite | washer | mean |" in text
    first = [r for r in rows if r["metric"] == "image_auroc"]
    assert [r["dataset.setting"] for r in first] == ["per_category", "unified"]
    for r in first:
        values = frame[(frame["setting"] == r["dataset.setting"])
                       & (frame["metric"] == "image_auroc")]
        for category in ("granite", "washer"):
            (value,) = values[values["category"] == category]["value"]
            assert r[category] == f"{100 * value:.1f}"

    (block,) = [b for b in cross_method_blocks(frame) if "image_auroc" in b.title]
    assert sorted(block.columns[1:]) == ["freqstat", "freqstat unified"]


def test_paper_tables_add_a_unified_column_once_unified_runs_exist(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("""
name: ocrgan/t
overrides: [dataset=synthetic]
grid: {dataset.category: [weave, chip], seed: [0]}
published: {source: ocrgan, table: "Table I: MVTec AD image AUROC vs SOTA", method: OCR-GAN,
            metrics: [image_auroc]}
""")
    sweep = load_sweep(path)
    rows = [{"method": "freqstat", "dataset": "synthetic", "category": p.category,
             "setting": "per_category", "metric": "image_auroc", "value": 0.6,
             "config_hash": p.hash} for p in expand(sweep)]
    write_tables([path], pd_frame(rows), tmp_path / "tables")
    assert "unified" not in (tmp_path / "tables" / "ocrgan__t.md").read_text()
    (twin,) = unified_points(sweep, "full")
    rows += [{"method": "freqstat", "dataset": "synthetic", "category": c,
              "setting": "unified", "metric": "image_auroc", "value": value,
              "config_hash": twin.hash} for c, value in (("weave", 0.7), ("chip", 0.9))]
    write_tables([path], pd_frame(rows), tmp_path / "tables")
    text = (tmp_path / "tables" / "ocrgan__t.md").read_text()
    assert "| reproduced | Δ vs OCR-GAN | unified |" in text
    assert "| weave | **60.0** |  | 70.0 |" in text and "| chip | **60.0** |  | 90.0 |" in text
    assert "| mean | **60.0** |  | 80.0 |" in text


def pd_frame(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=COLUMNS)


def test_readme_command_on_the_mvtec_ad_layout(tmp_path):
    from anomaly_freq.data.mvtec_ad import OBJECTS, TEXTURES
    from tests.trees import write_mvtec

    categories = (*TEXTURES, *OBJECTS)
    root = write_mvtec(tmp_path / "mvtec", categories, size=64, n_train=2, n_good=1,
                       defects=("crack",), n_defect=1)
    result = run_cli(["run", "method=fair", "dataset=mvtec_ad", "dataset.category=all",
                      "dataset.setting=unified", f"dataset.root={root}", "model.base_width=4",
                      "dataset.image_size=64", "eval.resolution=64", "trainer.max_epochs=1",
                      "trainer.enable_progress_bar=false", "output.report_images=0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "one unified model" in result.stdout
    run_dir = _unified_dir(tmp_path / "runs", "fair", "mvtec_ad")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(metrics["categories"]) == sorted(categories)
    protocol = json.loads((run_dir / "protocol.json").read_text())
    assert protocol["n_train_images"] == 2 * len(categories)  # the preset calibrates in-sample


def test_two_process_ddp_scores_each_category_image_once(tmp_path):
    args = ["run", "method=fair_fast", "model.base_width=4", *TINY_SYNTHETIC, PAIR, UNIFIED,
            "trainer.max_epochs=1", "output.report_images=0", "trainer.accelerator=cpu",
            "trainer.devices=2", "trainer.strategy=ddp", "dataset.num_workers=0",
            "dataset.n_test_good=5", f"output.root={tmp_path}"]  # 13 images: uneven shares
    done = run_cli(args, tmp_path, {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("afreq run:") == 1
    run_dir = _unified_dir(tmp_path, "fair")
    assert not (run_dir / "error.txt").exists()
    assert json.loads((run_dir / "protocol.json").read_text())["processes"] == 2
    for category in ("granite", "washer"):
        rows = (run_dir / "categories" / category / "scores.csv").read_text().splitlines()[1:]
        paths = [row.split(",")[0] for row in rows]
        assert len(paths) == len(set(paths)) == 13
        assert all(f"/{category}/test/" in p for p in paths)
