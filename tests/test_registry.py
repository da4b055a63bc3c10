import pytest

from anomaly_freq import registry
from anomaly_freq.errors import AfreqError
from anomaly_freq.methods.base import AnomalyModule
from tests.conftest import TINY_SYNTHETIC, run_cli


def test_in_tree_method_and_dataset_are_registered():
    assert "freqstat" in registry.list_methods()
    assert "synthetic" in registry.list_datasets()
    assert issubclass(registry.get_method("freqstat"), AnomalyModule)


def test_unknown_names_list_valid_choices():
    with pytest.raises(AfreqError, match="unknown method 'nope'; valid methods: .*freqstat"):
        registry.get_method("nope")
    with pytest.raises(AfreqError, match="unknown dataset 'nope'; valid datasets: .*synthetic"):
        registry.get_dataset("nope")


def test_name_clash_is_refused():
    class Other(AnomalyModule):
        pass

    with pytest.raises(AfreqError, match="'freqstat' is taken"):
        registry.register_method("freqstat")(Other)


def test_decorator_registers_and_create_method_builds(tmp_path):
    from anomaly_freq.config import load_config

    @registry.register_method("tmp_dummy")
    class Dummy(AnomalyModule):
        pass

    try:
        assert "tmp_dummy" in registry.list_methods()
        cfg = load_config()
        assert isinstance(registry.create_method("tmp_dummy", cfg), Dummy)
    finally:
        registry._METHODS.pop("tmp_dummy")


def test_entry_point_plugin_is_discovered(plugin_dir):
    assert "mean_image" in registry.list_methods()
    from anomaly_freq.config import load_config

    cfg = load_config(["method=mean_image", "method.power=1"])
    assert cfg.method.power == 1.0  # the plugin's default_config became part of the schema


def test_entry_point_plugin_runs_through_the_cli(plugin_dir, tmp_path):
    result = run_cli(
        ["run", "method=mean_image", "dataset.category=washer", "output.root=out", *TINY_SYNTHETIC],
        cwd=tmp_path, env={"PYTHONPATH": str(plugin_dir)},
    )
    assert result.returncode == 0, result.stderr
    (metrics,) = (tmp_path / "out" / "mean_image" / "synthetic" / "washer").glob("*/metrics.json")
    assert metrics.is_file()
