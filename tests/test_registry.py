import subprocess
import sys

import pytest

from anomaly_freq import registry
from anomaly_freq.config import build_method
from anomaly_freq.contract import AnomalyModule
from anomaly_freq.errors import AfreqError
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


def test_every_in_tree_plugin_has_a_config_file():
    """`registry.known_names` relies on this to reject a mistyped name without importing."""
    from anomaly_freq.config import CONFIG_DIR

    for group, names in (("method", registry.list_methods()),
                         ("dataset", registry.list_datasets())):
        table = registry._METHODS if group == "method" else registry._DATASETS
        in_tree = [n for n in names if table[n].__module__.startswith("anomaly_freq.")]
        assert in_tree
        missing = [n for n in in_tree if not (CONFIG_DIR / group / f"{n}.yaml").exists()]
        assert not missing, f"in-tree {group}s without configs/{group}/<name>.yaml: {missing}"


def test_mistyped_name_fails_without_importing_torch(tmp_path):
    script = ("import sys\nfrom anomaly_freq.cli import main\n"
              "code = main(['run', 'method=fiar'])\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 2, result.stderr
    assert "unknown method 'fiar'" in result.stderr and "fair" in result.stderr


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
        cfg = load_config(["method=tmp_dummy"])
        assert isinstance(build_method(cfg), Dummy)
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
