"""The run report: figures exist and report.md links them."""

import re

import pytest

from anomaly_freq.config import load_config
from anomaly_freq.run.engine import run
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


def _colour_bars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _legend(ax):
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_every_report_figure_names_method_category_and_metric(tmp_path, monkeypatch):
    """Figures are read through their matplotlib objects: titles, labels, legends, colour bars."""
    from anomaly_freq.metrics import Evaluator
    from anomaly_freq.viz import report as report_module
    from tests.test_metrics import make_batch

    batch, outputs = make_batch(tmp_path, n=6)
    evaluator = Evaluator(resolution=16)
    evaluator.update(batch, outputs)
    metrics = evaluator.compute()
    drawn = {}
    save = report_module.save_figure
    monkeypatch.setattr(report_module, "save_figure",
                        lambda fig, path: (drawn.setdefault(path.name, fig), save(fig, path)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    text = report_module.write_report(run_dir, evaluator, metrics, n=2, method="freqstat_x")
    assert text.read_text().splitlines()[:4] == [f"# Run report: freqstat_x / c ({run_dir.name})",
                                                 "", "| metric | value |", "|---|---|"]
    assert sorted(drawn) == ["least_0.png", "least_1.png", "most_0.png", "most_1.png", "pro.png",
                             "roc.png"]
    for fig in drawn.values():
        title = fig.get_suptitle() or fig.axes[0].get_title()
        assert title.startswith("freqstat_x / c: "), title
    (roc,) = drawn["roc.png"].axes
    assert f"image AUROC {metrics['image_auroc']:.3f}" in roc.get_title()
    assert (roc.get_xlabel(), roc.get_ylabel()) == ("false positive rate", "true positive rate")
    assert _legend(roc)[:2] == [f"image (AUROC {metrics['image_auroc']:.3f})",
                                f"pixel (AUROC {metrics['pixel_auroc']:.3f})"]
    (pro,) = drawn["pro.png"].axes
    assert f"AUPRO {metrics['pixel_aupro']:.3f}" in pro.get_title()
    assert (pro.get_xlabel(), pro.get_ylabel()) == ("false positive rate", "per-region overlap")
    assert _legend(pro) == [f"PRO (AUPRO {metrics['pixel_aupro']:.3f})", "FPR limit 0.3"]
    scale = report_module.map_percentiles(evaluator.final_maps(), (1, 99))
    scores = evaluator.scores()
    for name, rank in (("most_0.png", scores.argmax()), ("least_0.png", scores.argmin())):
        panel = drawn[name]
        assert f"score {scores[rank]:.4g}" in panel.get_suptitle()
        image, overlay, mask = (ax for ax in panel.axes if ax.get_label() != "<colorbar>")
        assert [ax.get_title() for ax in (image, overlay, mask)] == [
            "image", "anomaly map", "ground-truth mask"]
        (bar,) = _colour_bars(panel)
        assert bar.get_ylabel() == "anomaly score"
        assert overlay.get_images()[-1].get_clim() == pytest.approx(scale)


def test_the_epoch_curve_names_each_metrics_best_value():
    from anomaly_freq.viz.report import epoch_curve_figure

    rows = [{"epoch": "1", "image_auroc": "0.5"}, {"epoch": "2", "image_auroc": "0.75"}]
    (ax,) = epoch_curve_figure(rows, "m / c: test set during training").axes
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == (
        "m / c: test set during training", "epoch", "test metric")
    assert _legend(ax) == ["image_auroc (best 0.750)"]


def test_spectrum_csv_covers_zero_to_nyquist_and_the_figure_draws_its_ratio(tmp_path,
                                                                           monkeypatch):
    import numpy as np
    import pandas as pd
    import torch

    from anomaly_freq import registry
    from anomaly_freq.data.images import decode_image
    from anomaly_freq.freq import radial_energy_spectrum
    from anomaly_freq.run import spectrum
    from anomaly_freq.viz import spectrum as plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    cfg = load_config(["dataset.category=granite", f"output.root={tmp_path}", *TINY_SYNTHETIC])
    table = pd.read_csv(spectrum.spectrum_command(cfg) / "spectrum.csv")
    assert list(table.columns) == ["band", "freq_low", "freq_high", "normal_energy",
                                   "anomalous_energy", "ratio"]
    assert len(table) == 64 // 2 and table.freq_low.iloc[0] == 0 and table.freq_high.iloc[-1] == 0.5
    np.testing.assert_array_equal(table.freq_low.iloc[1:], table.freq_high.iloc[:-1])
    np.testing.assert_allclose(table.ratio, table.anomalous_energy / table.normal_energy,
                               rtol=1e-12)
    _, test = registry.create_dataset("synthetic", cfg).samples("granite")
    normal = torch.stack([torch.from_numpy(decode_image(s.path, 64)).permute(2, 0, 1)
                          for s in test if s.label == 0]).float() / 255
    np.testing.assert_allclose(table.normal_energy, radial_energy_spectrum(normal).mean(0),
                               rtol=1e-5)
    (fig,) = drawn
    top, bottom = fig.axes
    assert top.get_title() == "synthetic / granite: radial spectrum of the test images"
    assert _legend(top) == ["normal (6 images)", "anomalous (8 images)"]
    assert "dB" in top.get_ylabel() and bottom.get_ylabel() == "energy ratio, dB"
    assert bottom.get_xlabel() == "spatial frequency (cycles per pixel, 0.5 = Nyquist)"
    gain = 10 * np.log10(table.ratio.iloc[1:])  # band 0, the mean brightness, is not drawn
    np.testing.assert_allclose(bottom.get_lines()[0].get_ydata(), gain, rtol=1e-9)
    assert f"{gain.abs().max():.1f} dB" in bottom.get_title()
    level = 10 * np.log10(table.normal_energy.iloc[1:] / table.normal_energy.iloc[1])
    np.testing.assert_allclose(top.get_lines()[0].get_ydata(), level, rtol=1e-9, atol=1e-12)
