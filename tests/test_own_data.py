"""Users' own trees: both folder layouts, custom categories, partial trees, and bad files found
before training (or, when only decoding shows them, reported in one line)."""

import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from anomaly_freq import registry
from anomaly_freq.config import load_config
from anomaly_freq.data import check, progress, visa
from anomaly_freq.data.mvtec_layout import read_category
from anomaly_freq.errors import AfreqError
from tests.conftest import run_cli
from tests.trees import write_mvtec, write_raw_visa

FAST = ["dataset.image_size=32", "eval.resolution=32", "trainer.enable_progress_bar=false",
        "dataset.num_workers=0"]


def source(dataset, root, *more):
    cfg = load_config([f"dataset={dataset}", f"dataset.root={root}", *more])
    return registry.create_dataset(dataset, cfg)


def one_line(result):
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_folder_reads_the_mvtec_layout_under_its_own_name(tmp_path):
    write_mvtec(tmp_path / "src", categories=("bottle",))
    root = tmp_path / "widget_line"
    shutil.move(tmp_path / "src" / "bottle", root)
    src = source("folder", root)
    assert src.categories() == ["widget_line"]
    train, test = src.samples("widget_line")
    assert len(train) == 8 and all(s.mask is not None for s in test if s.label)
    assert source("folder", root, "dataset.category=gears").categories() == ["gears"]
    result = run_cli(["run", "dataset=folder", f"dataset.root={root}", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (metrics,) = (tmp_path / "runs" / "freqstat" / "folder" / "widget_line").glob("*/metrics.json")
    assert "pixel_auroc" in json.loads(metrics.read_text())


def test_folder_of_category_folders_in_either_layout(tmp_path):
    write_mvtec(tmp_path, categories=("bottle", "mvtec_style"))
    own = tmp_path / "own_style"
    shutil.move(tmp_path / "bottle" / "train" / "good", own / "good")
    shutil.move(tmp_path / "bottle" / "test", own / "test")
    (tmp_path / "notes").mkdir()
    src = source("folder", tmp_path)
    assert src.categories() == ["mvtec_style", "own_style"]  # bottle and notes lack a layout
    assert len(src.samples("own_style")[0]) == 8
    with pytest.raises(AfreqError, match=r"notes is in no layout dataset=folder reads"):
        src.samples("notes")
    with pytest.raises(AfreqError, match="is in no layout"):
        source("folder", tmp_path / "notes").categories()


def test_mvtec_ad_takes_a_category_of_ones_own(tmp_path):
    write_mvtec(tmp_path / "mv", categories=("bottle", "my_gear"))
    (tmp_path / "mv" / "notes" / "test").mkdir(parents=True)  # no train/good: not a category
    src = source("mvtec_ad", tmp_path / "mv")
    assert src.categories()[:15] == sorted(src.categories()[:15]) and "carpet" in src.categories()
    assert src.categories()[15:] == ["my_gear"] and src.present() == ["bottle", "my_gear"]
    assert src.group("my_gear") == "" and src.group("bottle") == "object"
    with pytest.raises(AfreqError, match=r"notes/train/good is missing"):
        src.samples("notes")
    result = run_cli(["run", "dataset=mvtec_ad", "dataset.root=mv", "dataset.category=my_gear",
                      *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "runs" / "freqstat" / "mvtec_ad" / "my_gear").glob("*/metrics.json"))


def test_visa_and_dagm_take_extra_category_folders(tmp_path):
    write_mvtec(tmp_path / "visa" / "1cls", categories=("candle", "my_board"))
    src = source("visa", tmp_path / "visa")
    assert src.categories()[-1] == "my_board" and src.present() == ["candle", "my_board"]
    assert len(src.samples("my_board")[0]) == 8
    for name in ("Class2", "Wafer"):
        for split in ("Train", "Test"):
            (tmp_path / "dagm" / name / split / "Label").mkdir(parents=True)
            (tmp_path / "dagm" / name / split / "Label" / "Labels.txt").write_text("0\n")
    dagm = source("dagm", tmp_path / "dagm")
    assert dagm.categories()[-1] == "Wafer" and dagm.present() == ["class2", "Wafer"]


def test_list_categories_shows_what_is_on_disk(tmp_path):
    write_mvtec(tmp_path / "mv", categories=("bottle", "my_gear"))
    result = run_cli(["list", "categories", "dataset=mvtec_ad", "dataset.root=mv"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "categories of mvtec_ad: bottle, my_gear (under mv); not found: cable, capsule" in out
    result = run_cli(["list", "categories", "dataset=visa", "dataset.root=none"], cwd=tmp_path)
    assert "none under none (known: candle" in " ".join(result.stdout.split())


def test_partial_visa_tree_runs_the_categories_present(tmp_path):
    write_raw_visa(tmp_path / "visa", objects=("candle",))
    result = run_cli(["run", "dataset=visa", "dataset.root=visa", "dataset.category=all", *FAST],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = tmp_path / "runs" / "freqstat" / "visa"
    assert [p.name for p in runs.iterdir()] == ["candle"]
    assert list((runs / "candle").glob("*/metrics.json"))
    skipped = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "11 of 12" in skipped[0] and "pcb1" in skipped[0]
    result = run_cli(["run", "dataset=visa", "dataset.root=empty", "dataset.category=all", *FAST],
                     cwd=tmp_path)
    assert result.returncode == 2 and "afreq data download visa" in one_line(result)


def _truncate(path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def _drop_mask(path):
    (path.parents[2] / "ground_truth" / "crack" / "001_mask.png").unlink()


def _shrink_mask(path):
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(
        path.parents[2] / "ground_truth" / "crack" / "001_mask.png")


@pytest.mark.parametrize(("damage", "needle"), [
    (_truncate, r"cannot read image \S*test/crack/001\.png \(image file is truncated\)"),
    (_drop_mask, r"no mask for defect image \S*test/crack/001\.png"),
    (_shrink_mask, r"mask \S*001_mask\.png is 12×10 but its image \S*001\.png is 48×48"),
])
def test_bad_file_stops_the_run_before_any_folder(tmp_path, damage, needle):
    write_mvtec(tmp_path / "mv", categories=("bottle",))
    damage(tmp_path / "mv" / "bottle" / "test" / "crack" / "001.png")
    result = run_cli(["run", "dataset=mvtec_ad", "dataset.root=mv", "dataset.category=bottle",
                      *FAST], cwd=tmp_path)
    assert result.returncode == 2
    assert re.search(needle, one_line(result))
    assert not (tmp_path / "runs").exists()


def _corrupt_pixels(path):
    """Scramble compressed pixel data, keeping the header and the closing IEND chunk."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 20
    data[start:start + 100] = bytes(b ^ 0x5A for b in data[start:start + 100])
    path.write_bytes(bytes(data))


def test_file_that_fails_only_to_decode_is_one_line_from_a_worker(tmp_path):
    write_mvtec(tmp_path / "mv", categories=("bottle",))
    bad = tmp_path / "mv" / "bottle" / "test" / "good" / "001.png"
    _corrupt_pixels(bad)
    train, test = read_category(tmp_path / "mv" / "bottle")
    check.check_files([*train, *test], show_progress=False)  # passes the fast check
    result = run_cli(["run", "dataset=mvtec_ad", "dataset.root=mv", "dataset.category=bottle",
                      *FAST[:-1], "dataset.num_workers=1"], cwd=tmp_path)
    assert result.returncode == 2
    err = one_line(result)
    assert err.startswith("error: cannot read image") and str(bad.relative_to(tmp_path)) in err
    assert "worker" not in err
    (error_txt,) = (tmp_path / "runs").glob("*/*/*/*/error.txt")
    assert "DataLoader worker" in error_txt.read_text()  # the full story stays in the folder


def test_trailing_bytes_after_the_end_marker_pass(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(path)
    whole = path.read_bytes()
    path.write_bytes(whole + b"\0" * (2 * check.TAIL))  # the end marker out of the tail read
    assert check.header_size(path) == (16, 16)
    path.write_bytes(whole[:-8])
    with pytest.raises(AfreqError, match=r"cannot read image \S*a\.jpg"):
        check.header_size(path)


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch, terminal):
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100)
    monkeypatch.setattr(progress, "get_console", lambda: console)
    write_raw_visa(tmp_path, objects=("candle",))
    visa.convert_object(tmp_path, "candle")
    train, test = read_category(tmp_path / "visa_pytorch" / "candle")
    check.check_files([*train, *test])
    shown = out.getvalue()
    for label in ("converting VisA candle", "checking image files"):
        assert (label in shown) == terminal
