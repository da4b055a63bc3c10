import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from anomaly_freq.config import load_config, preset_chain
from anomaly_freq.errors import AfreqError
from anomaly_freq.run.rundir import config_hash


def test_defaults_select_freqstat_on_synthetic():
    cfg = load_config()
    assert cfg.method.name == "freqstat"
    assert cfg.dataset.name == "synthetic"
    assert cfg.method.d0 == 16.0  # from configs/method/freqstat.yaml
    assert cfg.dataset.n_train == 60  # from configs/dataset/synthetic.yaml


def test_overrides_are_typed_and_layered():
    cfg = load_config(["trainer.max_epochs=5", "method.d0=8", "dataset.category=weave",
                       "dataset.root=null", "seed=7", "trainer.precision=16-mixed"])
    assert cfg.trainer.max_epochs == 5 and isinstance(cfg.trainer.max_epochs, int)
    assert cfg.method.d0 == 8.0 and isinstance(cfg.method.d0, float)
    assert cfg.dataset.category == "weave"
    assert cfg.dataset.root is None
    assert cfg.seed == 7
    assert cfg.trainer.precision == "16-mixed"


def test_float_key_accepts_scientific_notation():
    cfg = load_config(["method.std_floor=1e-3"])
    assert cfg.method.std_floor == pytest.approx(1e-3)


def test_config_is_read_only():
    cfg = load_config()
    with pytest.raises(ReadonlyConfigError):
        cfg.seed = 3


def test_unknown_key_names_key_and_suggests_closest():
    with pytest.raises(AfreqError) as err:
        load_config(["dataset.batch_sise=4"])
    message = str(err.value)
    assert "dataset.batch_sise" in message
    assert "did you mean 'dataset.batch_size'" in message


def test_unknown_top_level_group():
    with pytest.raises(AfreqError, match="unknown config key 'trainr'.*did you mean 'trainer'"):
        load_config(["trainr.max_epochs=3"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [("trainer.max_epochs=abc", "an integer"), ("trainer.deterministic=maybe", "true or false"),
     ("method.d0=high", "a number"), ("trainer.max_epochs=1.5", "an integer")],
)
def test_wrong_type_is_an_error(override, expected):
    with pytest.raises(AfreqError, match=expected) as err:
        load_config([override])
    assert override.split("=")[0] in str(err.value)


def test_group_cannot_be_overwritten_by_a_value():
    with pytest.raises(AfreqError, match="group"):
        load_config(["trainer=3"])


def test_plus_adds_a_new_key():
    cfg = load_config(["+trainer.limit_train_batches=2", "+extra.note=hello"])
    assert cfg.trainer.limit_train_batches == 2
    assert cfg.extra.note == "hello"


def test_unknown_method_lists_valid_ones():
    with pytest.raises(AfreqError, match="unknown method 'nosuch'.*freqstat"):
        load_config(["method=nosuch"])


def test_malformed_override():
    with pytest.raises(AfreqError, match="key=value"):
        load_config(["trainer.max_epochs"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(["seed=3"])
    path = tmp_path / "c.yaml"
    OmegaConf.save(cfg, path)
    assert OmegaConf.load(path) == cfg


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_presets_and_per_dataset_settings(tmp_path):
    from anomaly_freq.config import CONFIG_DIR

    for rel in ("default.yaml", "dataset/synthetic.yaml", "method/freqstat.yaml"):
        _write(tmp_path / rel, (CONFIG_DIR / rel).read_text())
    _write(tmp_path / "method/freqstat.yaml", (CONFIG_DIR / "method/freqstat.yaml").read_text()
           + "per_dataset:\n  synthetic:\n    trainer: {max_epochs: 7}\n")
    _write(tmp_path / "method/freqstat_fast.yaml", "_base_: freqstat\nmethod: {d0: 4.0}\n")
    cfg = load_config(["method=freqstat_fast"], config_dir=tmp_path)
    assert cfg.method.name == "freqstat"  # a preset runs the method it is based on
    assert cfg.method.preset == "freqstat_fast"  # kept for labels; not part of the hash
    relabelled = OmegaConf.merge(cfg, {"method": {"preset": "other"}})
    assert config_hash(relabelled) == config_hash(cfg)
    assert load_config([], config_dir=tmp_path).method.preset == "freqstat"
    assert cfg.method.d0 == 4.0 and cfg.method.map_sigma == 4.0
    assert cfg.trainer.max_epochs == 7  # per_dataset applied for the synthetic set
    assert load_config(["method=freqstat_fast", "trainer.max_epochs=2"],
                       config_dir=tmp_path).trainer.max_epochs == 2


@pytest.mark.parametrize(("override", "needle"), [
    ("seed=null", "'seed' cannot be null; its default is 0"),
    ("trainer=null", "'trainer' is a group of keys"),
    ("method.name=fair", "choose the method with method=fair"),
])
def test_overrides_that_would_break_the_run_later_are_refused(override, needle):
    with pytest.raises(AfreqError, match=needle):
        load_config([override])


def test_run_header_names_the_preset_chain_and_the_protocol_values():
    from anomaly_freq.cli import _run_header

    assert preset_chain("method", "fair_fast") == ["fair_fast", "fair"]
    assert preset_chain("method", "freqstat") == ["freqstat"]
    header = _run_header(load_config(["method=fair_fast", "dataset.shots=4"]))
    assert "preset fair_fast ← fair:" in header
    for value in ("dataset.resize=pil", "dataset.shots=4", "trainer.max_epochs=15",
                  "metrics.pro_variant=exact", "eval.normalisation=none"):
        assert value in header


@pytest.mark.parametrize("flag", [["--print-config"], ["--cfg", "job"]])
def test_print_config_prints_the_resolved_config_and_runs_nothing(tmp_path, monkeypatch, capsys,
                                                                  flag):
    from anomaly_freq.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", "method=dfd", "dataset=visa", "trainer.max_epochs=3", *flag]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed == load_config(["method=dfd", "dataset=visa", "trainer.max_epochs=3"])
    assert printed.method.lambda_sim == 1.0 and printed.dataset.resize == "cv2"
    assert list(tmp_path.iterdir()) == []


def _conflicting_configs(tmp_path, per_dataset=""):
    from anomaly_freq.config import CONFIG_DIR

    _write(tmp_path / "default.yaml", (CONFIG_DIR / "default.yaml").read_text())
    _write(tmp_path / "method/wide.yaml", "method: {name: freqstat}\n"
           "dataset: {image_size: 64, resize: cv2}\n" + per_dataset)
    _write(tmp_path / "dataset/tiny.yaml", "dataset: {name: tiny, image_size: 32, resize: cv2}\n")
    return ["method=wide", "dataset=tiny"]


def test_a_dataset_file_may_not_override_the_method_preset(tmp_path):
    overrides = _conflicting_configs(tmp_path)
    with pytest.raises(AfreqError) as err:
        load_config(overrides, config_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    for needle in ("'dataset.image_size' is 64", "method/wide.yaml", "32 in",
                   "dataset/tiny.yaml", "under per_dataset.tiny in"):
        assert needle in message
    assert "resize" not in message  # both files agree on it


def test_per_dataset_settles_what_the_dataset_file_disagrees_on(tmp_path):
    from anomaly_freq.config import explain_config

    overrides = _conflicting_configs(
        tmp_path, "per_dataset:\n  tiny:\n    dataset: {image_size: 48}\n")
    cfg, sources = explain_config(overrides, config_dir=tmp_path)
    assert cfg.dataset.image_size == 48
    assert sources["dataset.image_size"] == "per_dataset:wide.tiny"
    assert sources["dataset.resize"] == "dataset:tiny"  # equal values: the later layer is named
    cfg, sources = explain_config([*overrides, "dataset.image_size=16"], config_dir=tmp_path)
    assert cfg.dataset.image_size == 16 and sources["dataset.image_size"] == "command line"


def _shipped(group):
    from anomaly_freq.config import CONFIG_DIR

    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("method", _shipped("method"))
def test_every_shipped_method_loads_with_every_shipped_dataset(method):
    for dataset in _shipped("dataset"):
        cfg = load_config([f"method={method}", f"dataset={dataset}"])
        assert cfg.method.preset == method and cfg.dataset.name == dataset
        if dataset == "cifar10":
            assert cfg.dataset.image_size == 32  # CIFAR-10's own size, through per_dataset


def test_provenance_names_the_layer_that_set_each_value():
    from anomaly_freq.config import explain_config

    cfg, sources = explain_config(["method=fair_fast", "dataset=visa", "seed=5"])
    assert cfg == load_config(["method=fair_fast", "dataset=visa", "seed=5"])
    assert sources["dataset.image_size"] == "method:fair_fast"
    assert sources["method.input"] == "method:fair"
    assert sources["dataset.root"] == "dataset:visa"
    assert sources["trainer.max_epochs"] == "per_dataset:fair_fast.visa"
    assert sources["seed"] == "command line"
    assert sources["trainer.precision"] == "default"
    assert sources["method.preset"] == "command line"
    assert explain_config(["method=fair_fast", "dataset=visa"])[1]["seed"] == "default"
    assert explain_config(["method=dfd", "dataset=mvtec_ad"])[1][
        "method.foreground.hazelnut"] == "per_dataset:dfd.mvtec_ad"


def test_a_plugins_default_config_is_a_method_layer(tmp_path):
    from anomaly_freq import registry
    from anomaly_freq.config import CONFIG_DIR, explain_config
    from anomaly_freq.contract import AnomalyModule

    @registry.register_method("tmp_layered")
    class Layered(AnomalyModule):
        default_config = {"method": {"power": 2.0}, "dataset": {"image_size": 64}}

    try:
        cfg, sources = explain_config(["method=tmp_layered"])
        assert cfg.method.name == "tmp_layered" and sources["method.name"] == "method:tmp_layered"
        assert sources["method.power"] == "method:tmp_layered"
        _write(tmp_path / "default.yaml", (CONFIG_DIR / "default.yaml").read_text())
        _write(tmp_path / "dataset/tiny.yaml", "dataset: {name: tiny, image_size: 32}\n")
        with pytest.raises(AfreqError, match="default_config of method plugin tmp_layered"):
            load_config(["method=tmp_layered", "dataset=tiny"], config_dir=tmp_path)
    finally:
        registry._METHODS.pop("tmp_layered")


def test_print_config_names_each_values_layer(tmp_path, monkeypatch, capsys):
    from anomaly_freq.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", "method=fair_fast", "dataset=visa", "seed=5", "--print-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "seed: 5" in lines[0] and lines[0].endswith("# command line")
    assert any(line.startswith("  image_size: 128 ") and line.endswith("# method:fair_fast")
               for line in lines)
    assert any(line.startswith("  max_epochs: 15 ")
               and line.endswith("# per_dataset:fair_fast.visa") for line in lines)
    assert list(tmp_path.iterdir()) == []
