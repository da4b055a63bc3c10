"""The run report: figures exist and report.md links them."""

import re

from anomaly_freq.config import load_config
from anomaly_freq.engine import run
from tests.conftest import TINY_SYNTHETIC


def test_run_writes_report_with_linked_figures(tmp_path):
    cfg = load_config(["dataset.category=chip", f"output.root={tmp_path}", "output.report_images=2",
                       *TINY_SYNTHETIC])
    result = run(cfg)[0]
    report = (result.run_dir / "report.md").read_text()
    links = re.findall(r"\]\((figures/[^)]+)\)", report)
    assert "figures/roc.png" in links and "figures/pro.png" in links
    assert sum(link.startswith("figures/most_") for link in links) == 2
    assert sum(link.startswith("figures/least_") for link in links) == 2
    for link in links:
        assert (result.run_dir / link).stat().st_size > 1000
    assert "| pixel_aupro |" in report and "| image_auroc |" in report


def test_spectrum_command_writes_a_plot(tmp_path):
    from tests.conftest import run_cli

    result = run_cli(["spectrum", "dataset.category=weave", f"output.root={tmp_path}",
                      *TINY_SYNTHETIC], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (png,) = (tmp_path / "spectrum" / "synthetic" / "weave").glob("*/spectrum.png")
    assert png.stat().st_size > 5000


def test_report_without_masks_has_image_curves_only_and_no_temp_files(tmp_path):
    from anomaly_freq.metrics import Evaluator
    from anomaly_freq.viz import write_report
    from tests.test_metrics import make_batch

    batch, outputs = make_batch(tmp_path)
    batch["mask_path"] = [""] * 4
    evaluator = Evaluator(resolution=32)
    evaluator.update(batch, outputs)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report = write_report(run_dir, evaluator, evaluator.compute(), n=1).read_text()
    assert "figures/pro.png" not in report and "| pixel_auroc |" not in report
    assert sorted(p.name for p in (run_dir / "figures").iterdir()) == [
        "least_0.png", "most_0.png", "roc.png"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["figures", "report.md"]
    assert "not a per-image scale" in report
