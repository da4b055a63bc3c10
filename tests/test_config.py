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
