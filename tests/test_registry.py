import sys
import textwrap

import pytest

from anomaly_freq import registry
from anomaly_freq.errors import AfreqError
from anomaly_freq.methods.base import AnomalyModule
from tests.conftest import TINY_SYNTHETIC, run_cli

PLUGIN_SOURCE = textwrap.dedent('''
    """A third-party method: distance of each pixel from the mean training image."""
    import torch
    from anomaly_freq.methods.base import AnomalyModule

    class MeanImage(AnomalyModule):
        trainer_arguments = {"max_epochs": 1}
        default_config = {"method": {"name": "mean_image", "power": 2.0}}

        def __init__(self, cfg):
            super().__init__(cfg)
            self.automatic_optimization = False
            self.power = float(cfg.method.power)
            self.register_buffer("mean", torch.zeros(0))
            self.total, self.count = None, 0

        def configure_optimizers(self):
            return None

        def training_step(self, batch, batch_idx):
            s = batch["image"].sum(0, keepdim=True)
            self.total = s if self.total is None else self.total + s
            self.count += batch["image"].shape[0]

        def on_train_epoch_end(self):
            self.mean = self.total / self.count

        def predict_step(self, batch, batch_idx=0):
            amap = (batch["image"] - self.mean).abs().pow(self.power).mean(1, keepdim=True)
            return {"anomaly_map": amap, "pred_score": amap.flatten(1).amax(1)}
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A tiny installed distribution that exposes a method through the entry-point group."""
    site = tmp_path / "site"
    (site / "afreq_test_plugin").mkdir(parents=True)
    (site / "afreq_test_plugin" / "__init__.py").write_text(PLUGIN_SOURCE)
    info = site / "afreq_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: afreq-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[anomaly_freq.methods]\nmean_image = afreq_test_plugin:MeanImage\n"
    )
    monkeypatch.syspath_prepend(str(site))
    registry.reset_plugin_cache()
    yield site
    registry._METHODS.pop("mean_image", None)
    sys.modules.pop("afreq_test_plugin", None)
    registry.reset_plugin_cache()


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
