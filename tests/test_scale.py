"""Scale: synthesis in loader workers, exact multi-process runs, mixed precision and compile.

The DDP tests start real processes through the CLI (Lightning's launcher re-runs the command),
two CPU processes talking over gloo at tiny widths.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from sklearn.metrics import roc_auc_score

from anomaly_freq import registry
from anomaly_freq.config import build_method, load_config, speed_options
from anomaly_freq.contract import AnomalyModule
from anomaly_freq.data import AnomalyDataModule, cache_dir
from anomaly_freq.data.cache import DecodeCache
from anomaly_freq.data.pipeline import EpochSampler, ShardSampler
from anomaly_freq.errors import AfreqError
from anomaly_freq.run.engine import run, with_category
from tests.conftest import TINY_SYNTHETIC, run_cli

FAIR_TINY = ["method=fair_fast", "model.base_width=4", "dataset.image_size=64",
             "eval.resolution=64", "trainer.max_epochs=1", "output.report_images=0",
             "output.save_checkpoint=false", "trainer.enable_progress_bar=false"]
PRESETS = {
    "fair": ["method=fair_fast", "model.base_width=4", "method.texture_source=training"],
    "dfd": ["method=dfd_fast", "dataset.shots=2", "dataset.shot_copies=4",
            "method.fixed_anomalies=false"],
    "ocrgan": ["method=ocrgan_fast"],
}


def _datamodule(name: str, workers: int) -> AnomalyDataModule:
    cfg = with_category(load_config([*PRESETS[name], *TINY_SYNTHETIC,
                                     f"dataset.num_workers={workers}"]), "weave")
    source = registry.create_dataset(cfg.dataset.name, cfg)
    train, test = source.samples("weave")
    if cfg.dataset.shots:
        from anomaly_freq.data.fewshot import draw_shots
        train = draw_shots(train, cfg.dataset.shots, cfg.dataset.shot_seed)
    method = build_method(cfg)
    cache = DecodeCache("none", cache_dir() / "decoded")
    return AnomalyDataModule.from_config(cfg.dataset, train, test, "weave", cache,
                                         method.train_transform(), seed=cfg.seed)


def _epochs(dm: AnomalyDataModule, epochs: int = 2) -> list[dict]:
    loader = dm.train_dataloader()
    batches = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        batches.extend(loader)
    return batches


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_training_synthesis_is_identical_for_any_worker_count(name):
    main, workers = _epochs(_datamodule(name, 0)), _epochs(_datamodule(name, 2))
    assert len(main) == len(workers) > 0
    synthesised = {"fair": "input", "dfd": "augmented", "ocrgan": "forged"}[name]
    for a, b in zip(main, workers, strict=True):
        assert a.keys() == b.keys() and synthesised in a
        for key, value in a.items():
            if torch.is_tensor(value):
                assert torch.equal(value, b[key]), key
            else:
                assert value == b[key], key
    # epochs differ: a sample is corrupted anew every epoch
    first = {i: t for i, t in zip(main[0]["index"].tolist(), main[0][synthesised], strict=True)}
    later = [(i, t) for batch in main[len(main) // 2:]
             for i, t in zip(batch["index"].tolist(), batch[synthesised], strict=True)]
    assert any(not torch.equal(first[i], t) for i, t in later if i in first)


def test_samplers_shard_every_index_and_pad_uneven_shares():
    shards = [list(ShardSampler(41, rank, 3)) for rank in range(3)]
    assert {len(shard) for shard in shards} == {14}
    flat = [i for shard in shards for i in shard]
    assert set(flat) == set(range(41)) and len(flat) == 42  # one image scored twice, merged once
    assert list(ShardSampler(1, rank=1, world=2)) == [0]  # no rank is left without images
    ranks = [list(EpochSampler(41, seed=0, rank=r, world=3)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1  # equal step counts on every rank
    assert {i for r in ranks for _, i in r} == set(range(41))
    assert list(EpochSampler(41, seed=0)) == list(EpochSampler(41, seed=0))


def test_fair_metrics_do_not_depend_on_the_number_of_workers(tmp_path):
    metrics = []
    for workers in (0, 2):
        (result,) = run(load_config([*FAIR_TINY, *TINY_SYNTHETIC, "dataset.category=weave",
                                     f"dataset.num_workers={workers}",
                                     f"output.root={tmp_path / str(workers)}"]))
        scores = pd.read_csv(result.run_dir / "scores.csv")
        metrics.append((result.metrics, scores.pred_score.tolist()))
    assert metrics[0] == metrics[1]


DDP_RUNS = {"fair": (FAIR_TINY, 40),
            # a GAN (the generator's step leaves the discriminator without gradients), on a
            # test set of 39 images that two processes cannot split evenly
            "ocrgan": (["method=ocrgan_fast", "trainer.max_epochs=1", "output.report_images=0",
                        "output.save_checkpoint=false", "trainer.enable_progress_bar=false",
                        "dataset.n_test_good=19"], 39)}


@pytest.mark.parametrize("name", sorted(DDP_RUNS))
def test_two_process_ddp_writes_one_folder_and_scores_each_image_once(tmp_path, name):
    overrides, n_test = DDP_RUNS[name]
    args = ["run", *overrides, "dataset.category=weave", "trainer.accelerator=cpu",
            "trainer.devices=2", "trainer.strategy=ddp", "dataset.num_workers=0",
            f"output.root={tmp_path}"]
    done = run_cli(args, tmp_path, {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / name / "synthetic" / "weave").iterdir()
    scores = pd.read_csv(folder / "scores.csv")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(scores) == n_test and scores.path.nunique() == n_test
    assert not (folder / "error.txt").exists()
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(scores.label, scores.pred_score),
                                                   abs=1e-12)
    protocol = json.loads((folder / "protocol.json").read_text())
    assert protocol["processes"] == 2 and protocol["resize"] == "pil"
    # what the run's `auto`s resolved to
    assert protocol["method_settings"] == build_method(load_config([*overrides])).protocol()
    assert done.stdout.count("afreq run:") == 1  # rank 1 reports nothing
    calibrated = [image["path"] for image in json.loads(
        (folder / "calibration.json").read_text())["images"]]  # the presets calibrate in-sample
    assert sorted(calibrated) == sorted((folder / "train_files.txt").read_text().split())


FAILING_PLUGIN = '''
import torch

from anomaly_freq.contract import AnomalyModule


class FailsOnRankOne(AnomalyModule):
    default_config = {"method": {}}

    def __init__(self, *, seed=0):
        super().__init__(seed=seed)
        self.level = torch.nn.Parameter(torch.zeros(1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def training_step(self, batch, batch_idx):
        if self.global_rank == 1:
            raise RuntimeError("rank one breaks on purpose")
        return (self.level - batch["image"].mean()).square().sum()

    def predict_step(self, batch, batch_idx=0):
        amap = (batch["image"] - self.level).abs().mean(1, keepdim=True)
        return {"anomaly_map": amap, "pred_score": amap.amax(dim=(1, 2, 3))}
'''


def test_a_failing_rank_stops_the_run_and_leaves_error_txt(tmp_path, plugin_dir):
    (plugin_dir / "afreq_test_plugin" / "failing.py").write_text(FAILING_PLUGIN)
    entry = plugin_dir / "afreq_test_plugin-0.1.dist-info" / "entry_points.txt"
    entry.write_text(entry.read_text() + "fails_on_rank_one = afreq_test_plugin.failing:"
                     "FailsOnRankOne\n")
    args = ["run", "method=fails_on_rank_one", *TINY_SYNTHETIC, "dataset.category=weave",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
            "dataset.num_workers=0", f"output.root={tmp_path}"]
    done = run_cli(args, tmp_path, {"PYTHONPATH": str(plugin_dir), "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    (folder,) = (tmp_path / "fails_on_rank_one" / "synthetic" / "weave").iterdir()
    assert "rank one breaks on purpose" in (folder / "error.txt").read_text()
    assert not (folder / "metrics.json").exists()


def test_a_method_without_trainable_parameters_asks_for_one_device(tmp_path):
    cfg = load_config(["method=freqstat", *TINY_SYNTHETIC, "dataset.category=weave",
                       "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                       f"output.root={tmp_path}"])
    with pytest.raises(AfreqError, match="trainer.devices=1"):
        run(cfg)
    assert not (tmp_path / "freqstat").exists()


@pytest.mark.parametrize(("overrides", "needle"), [
    (["trainer.accelerator=cpu", "trainer.devices=512"], "trainer.devices=512"),
    (["trainer.accelerator=cpu", "trainer.strategy=fsdp"], "trainer.strategy=fsdp"),
    (["trainer.accelerator=gpu"], "trainer.accelerator=cpu"),
    (["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn"],
     "trainer.strategy=ddp"),
    (["trainer.accelerator=cpu", "trainer.num_nodes=2", "trainer.strategy=ddp"],
     "trainer.num_nodes=2"),
])
def test_impossible_trainer_settings_fail_in_one_line_before_a_folder(tmp_path, monkeypatch,
                                                                      overrides, needle):
    for name in ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    if "gpu" in str(overrides) and torch.cuda.is_available():
        overrides = ["trainer.accelerator=gpu", f"trainer.devices={torch.cuda.device_count() + 1}"]
        needle = "trainer.devices"
    cfg = load_config(["method=fair_fast", "model.base_width=4", *TINY_SYNTHETIC,
                       "dataset.category=weave", f"output.root={tmp_path}", *overrides])
    with pytest.raises(AfreqError, match=needle.replace(".", r"\.")) as caught:
        run(cfg)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "fair").exists()


def test_a_gan_over_several_devices_finds_unused_parameters():
    from anomaly_freq.run.engine import trainer_kwargs

    model = build_method(load_config(["method=ocrgan_fast"]))
    for strategy in ("ddp", "auto"):
        cfg = load_config(["method=ocrgan_fast", "trainer.devices=2",
                           f"trainer.strategy={strategy}"])
        assert trainer_kwargs(cfg, model, [])["strategy"] == "ddp_find_unused_parameters_true"
    one = trainer_kwargs(load_config(["method=ocrgan_fast"]), model, [])
    assert one["strategy"] == "auto"


def test_ocrgan_skips_only_batches_smaller_than_its_ranks_share():
    from types import SimpleNamespace

    model = build_method(load_config(["method=ocrgan_fast"]))
    share = SimpleNamespace(sampler=range(6), dataset=range(12))  # rank's 6 of 12 images
    model._trainer = SimpleNamespace(train_dataloader=share)
    assert not model._skip(6)  # every batch of a rank holding fewer images than a batch trains
    share.sampler = range(20)
    assert model._skip(4) and not model._skip(8)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_training_transforms_work_in_spawned_workers(name):
    # spawn (macOS, and forkserver on Linux with Python 3.14) pickles the dataset to workers
    dm = _datamodule(name, 1)
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=2, num_workers=1,
                                         sampler=EpochSampler(len(dm.train_set), 0),
                                         multiprocessing_context="spawn")
    batch = next(iter(loader))
    reference = next(iter(_datamodule(name, 0).train_dataloader()))
    synthesised = {"fair": "input", "dfd": "augmented", "ocrgan": "forged"}[name]
    assert torch.equal(batch[synthesised], reference[synthesised][:2])


# ------------------------------------------------------------------ precision and compile

SPEED = {"fair": ["method=fair", "model.base_width=4", "dataset.image_size=32",
                  "eval.resolution=32"],
         "dfd": ["method=dfd_fast"], "ocrgan": ["method=ocrgan_fast"]}


def _model(name: str, *extra: str) -> AnomalyModule:
    cfg = load_config([*SPEED[name], *extra])
    torch.manual_seed(0)
    model = build_method(cfg)
    model.apply_speed_options(**speed_options(cfg))
    return model.eval()


def _scores(model: AnomalyModule, context=None) -> torch.Tensor:
    side = model.side
    images = torch.rand(4, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), (context or torch.autocast("cpu", enabled=False)):
        out = model.predict_step({"image": images})
    assert out["anomaly_map"].dtype == torch.float32 and out["pred_score"].dtype == torch.float32
    return out["pred_score"]


@pytest.mark.parametrize("name", sorted(SPEED))
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_scores_stay_close_to_fp32(name, precision):
    model = _model(name)
    reference = _scores(model)
    mixed = _scores(model, MixedPrecision(precision, "cpu").predict_step_context())
    torch.testing.assert_close(mixed, reference, rtol=0.05, atol=0.02)
    assert not torch.equal(mixed, reference)  # autocast did run the networks in half precision


def test_the_discriminator_probability_is_float32_under_autocast():
    model = _model("ocrgan")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        reference, _ = model.discriminator(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            probability, _ = model.discriminator(x)
    assert probability.dtype == torch.float32
    torch.testing.assert_close(probability, reference, rtol=0.05, atol=0.02)


@pytest.mark.parametrize("name", sorted(SPEED))
def test_compile_and_channels_last_keep_the_scores(name):
    reference = _scores(_model(name))
    fast = _model(name, "method.compile=true", "method.channels_last=true")
    torch.testing.assert_close(_scores(fast), reference, rtol=1e-4, atol=1e-5)
    assert set(fast.state_dict()) == set(_model(name).state_dict())  # checkpoints unchanged


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_every_method_trains_under_mixed_precision(tmp_path, precision):
    for name, extra in (("fair", FAIR_TINY), ("dfd", [*PRESETS["dfd"], "trainer.max_epochs=1"]),
                        ("ocrgan", [*PRESETS["ocrgan"], "trainer.max_epochs=1"])):
        (result,) = run(load_config([*extra, *TINY_SYNTHETIC, "dataset.category=weave",
                                     "trainer.accelerator=cpu", f"trainer.precision={precision}",
                                     "output.report_images=0", "output.save_checkpoint=false",
                                     f"output.root={tmp_path}"]))
        assert 0 <= result.metrics["image_auroc"] <= 1, name
        assert json.loads((result.run_dir / "protocol.json").read_text())["precision"] == precision


def test_bf16_on_a_gpu_without_it_names_the_key_and_what_works(monkeypatch):
    from types import SimpleNamespace

    from anomaly_freq.run.engine import check_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    with pytest.raises(AfreqError, match=r"trainer\.precision=bf16-mixed.*V100.*16-mixed"):
        check_precision(trainer, {"precision": "bf16-mixed"})
    check_precision(trainer, {"precision": "16-mixed"})  # float16 is fine there
