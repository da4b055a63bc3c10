"""MVTec AD, VisA and folder datasets on miniature trees; few-shot; the decode cache."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from anomaly_freq import registry
from anomaly_freq.config import load_config
from anomaly_freq.data import images as images_module
from anomaly_freq.data.cache import DecodeCache
from anomaly_freq.data.datamodule import SampleDataset
from anomaly_freq.data.fewshot import RotatedCopies, draw_shots
from anomaly_freq.data.mvtec_layout import read_category
from anomaly_freq.data.staging import MARKER, build_once
from anomaly_freq.errors import AfreqError
from tests.conftest import run_cli
from tests.trees import write_mvtec, write_raw_visa

FAST = ["dataset.image_size=48", "eval.resolution=48", "trainer.enable_progress_bar=false",
        "dataset.num_workers=0"]


def source(dataset, root, *more):
    cfg = load_config([f"dataset={dataset}", f"dataset.root={root}", *more])
    return registry.create_dataset(dataset, cfg)


def test_mvtec_reads_layout_and_converts_grey_to_rgb(tmp_path):
    write_mvtec(tmp_path)
    train, test = source("mvtec_ad", tmp_path).samples("grid")
    assert len(train) == 8 and len(test) == 4 + 2 * 3
    dataset = SampleDataset(test, "grid", 32)
    item = dataset[0]  # test/broken sorts before test/good
    assert item["image"].shape == (3, 32, 32) and item["label"] == 1 and item["defect"] == "broken"
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    good = dataset[len(test) - 1]
    assert good["label"] == 0 and good["mask"].sum() == 0 and good["mask_path"] == ""


def test_masks_matched_by_stem_not_position(tmp_path):
    write_mvtec(tmp_path, categories=("bottle",))
    gt = tmp_path / "bottle" / "ground_truth" / "broken"
    # an orphan mask that sorts first would shift a position-based match by one
    shutil.copy(gt / "000_mask.png", gt / "0000_orphan_mask.png")
    _, test = read_category(tmp_path / "bottle")
    for s in test:
        if s.label:
            assert s.mask.name == f"{s.path.stem}_mask.png"


def test_mvtec_groups_and_categories(tmp_path):
    src = source("mvtec_ad", tmp_path)
    assert len(src.categories()) == 15
    assert src.group("carpet") == "texture" and src.group("bottle") == "object"


def test_cli_runs_freqstat_on_mvtec_tree(tmp_path):
    write_mvtec(tmp_path / "mv")
    result = run_cli(["run", "dataset=mvtec_ad", "dataset.root=mv", "dataset.category=bottle",
                      *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (metrics,) = (tmp_path / "runs" / "freqstat" / "mvtec_ad" / "bottle").glob("*/metrics.json")
    assert json.loads(metrics.read_text())["image_auroc"] > 0.5


def test_visa_raw_tree_is_converted_once_and_runs(tmp_path):
    write_raw_visa(tmp_path / "visa")
    result = run_cli(["run", "dataset=visa", "dataset.root=visa", "dataset.category=candle",
                      *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    converted = tmp_path / "visa" / "visa_pytorch" / "candle"
    assert len(list((converted / "train" / "good").iterdir())) == 8
    assert len(list((converted / "test" / "bad").iterdir())) == 4
    mask = np.asarray(Image.open(converted / "ground_truth" / "bad" / "000.png"))
    assert set(np.unique(mask)) == {0, 255}
    stamp = (converted / ".complete").stat().st_mtime_ns
    train, test = source("visa", tmp_path / "visa").samples("candle")
    assert (converted / ".complete").stat().st_mtime_ns == stamp  # not converted again
    assert len(train) == 8 and sum(s.label for s in test) == 4
    assert source("visa", tmp_path / "visa").group("pcb1") == "complex_structure"


def test_visa_accepts_spot_diff_layout(tmp_path):
    write_mvtec(tmp_path / "1cls", categories=("pcb2",))
    train, _ = source("visa", tmp_path).samples("pcb2")
    assert len(train) == 8


def test_folder_dataset_with_and_without_masks(tmp_path):
    root = tmp_path / "my_parts"
    write_mvtec(tmp_path / "mv", categories=("bottle",))
    shutil.copytree(tmp_path / "mv" / "bottle" / "train" / "good", root / "good")
    shutil.copytree(tmp_path / "mv" / "bottle" / "test", root / "test")
    src = source("folder", root)
    assert src.categories() == ["my_parts"]
    _, test = src.samples("my_parts")
    assert all(s.mask is None for s in test)
    result = run_cli(["run", "dataset=folder", f"dataset.root={root}", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (metrics,) = (tmp_path / "runs" / "freqstat" / "folder" / "my_parts").glob("*/metrics.json")
    assert "pixel_auroc" not in json.loads(metrics.read_text())  # no masks, no pixel metrics
    shutil.copytree(tmp_path / "mv" / "bottle" / "ground_truth", root / "ground_truth")
    _, test = src.samples("my_parts")
    assert all(s.mask is not None for s in test if s.label)


def test_few_shot_draw_is_reproducible_and_recorded(tmp_path):
    write_mvtec(tmp_path / "mv", categories=("bottle",))
    train, _ = source("mvtec_ad", tmp_path / "mv").samples("bottle")
    first = draw_shots(train, 2, seed=3)
    assert first == draw_shots(list(reversed(train)), 2, seed=3)
    assert first != draw_shots(train, 2, seed=4)
    result = run_cli(["run", "dataset=mvtec_ad", "dataset.root=mv", "dataset.category=bottle",
                      "dataset.shots=2", "dataset.shot_seed=3", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "freqstat" / "mvtec_ad" / "bottle").iterdir()
    assert (run_dir / "train_files.txt").read_text().split() == [str(s.path.relative_to(tmp_path))
                                                                 for s in first]
    assert json.loads((run_dir / "protocol.json").read_text())["shots"] == 2
    with pytest.raises(AfreqError, match="dataset.shots=99"):
        draw_shots(train, 99, 0)


def test_rotated_copies_expand_and_are_fixed(tmp_path):
    write_mvtec(tmp_path, categories=("bottle",))
    train, _ = read_category(tmp_path / "bottle")
    base = SampleDataset(train[:2], "bottle", 32)
    expanded = RotatedCopies(base, copies=5, max_angle=90, seed=0)
    assert len(expanded) == 10
    a, b = expanded[3], expanded[3]
    assert torch_equal(a["image"], b["image"]) and abs(float(a["rotation"])) <= 90
    assert not torch_equal(expanded[0]["image"], expanded[1]["image"])


def torch_equal(x, y):
    return bool((x == y).all())


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cache_decodes_each_file_once(tmp_path, monkeypatch, mode):
    write_mvtec(tmp_path, categories=("bottle",))
    train, _ = read_category(tmp_path / "bottle")
    calls = []
    real = images_module.decode_image
    monkeypatch.setattr("anomaly_freq.data.datamodule.decode_image",
                        lambda *a: calls.append(a) or real(*a))
    dataset = SampleDataset(train, "bottle", 32, cache=DecodeCache(mode, tmp_path / "c"))
    first = [dataset[i]["image"] for i in range(len(dataset))]
    second = [dataset[i]["image"] for i in range(len(dataset))]
    assert len(calls) == len(train)
    assert all(torch_equal(x, y) for x, y in zip(first, second, strict=True))


# --- bad input -------------------------------------------------------------------------------

def test_missing_root_says_how_to_download(tmp_path):
    with pytest.raises(AfreqError, match="afreq data download mvtec_ad"):
        source("mvtec_ad", tmp_path / "nowhere").samples("bottle")
    with pytest.raises(AfreqError, match="afreq data download visa"):
        source("visa", tmp_path / "nowhere").samples("candle")


def test_unknown_category_lists_valid(tmp_path):
    with pytest.raises(AfreqError, match="valid: .*bottle.*zipper"):
        source("mvtec_ad", tmp_path).samples("bottel")


def test_defect_without_mask(tmp_path):
    write_mvtec(tmp_path, categories=("bottle",))
    (tmp_path / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(AfreqError, match=r"no mask for defect image .*crack.*001\.png"):
        read_category(tmp_path / "bottle")


def test_mask_of_wrong_size(tmp_path):
    write_mvtec(tmp_path, categories=("bottle",))
    mask = tmp_path / "bottle" / "ground_truth" / "crack" / "000_mask.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(mask)
    _, test = read_category(tmp_path / "bottle")
    sample = next(s for s in test if s.mask == mask)
    with pytest.raises(AfreqError, match=r"000_mask\.png is 12×10 but its image"):
        SampleDataset([sample], "bottle", 32)[0]


def test_truncated_image(tmp_path):
    write_mvtec(tmp_path, categories=("bottle",))
    path = tmp_path / "bottle" / "train" / "good" / "002.png"
    path.write_bytes(path.read_bytes()[:60])
    train, _ = read_category(tmp_path / "bottle")
    with pytest.raises(AfreqError, match=r"cannot read image .*002\.png"):
        SampleDataset(train, "bottle", 32)[2]


def test_float_image_is_refused_by_name(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    with pytest.raises(AfreqError, match=r"depth\.tiff holds floating-point pixels"):
        images_module.read_rgb(path)


def test_staged_folder_finished_elsewhere_is_kept(tmp_path):
    target = tmp_path / "built"

    def build(staging):
        (staging / "mine.txt").write_text("late")
        target.mkdir()  # another worker finishes the same folder meanwhile
        (target / "theirs.txt").write_text("first")
        (target / MARKER).write_text("complete\n")

    assert build_once(target, build) == target
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["built"]


def test_empty_train_folder(tmp_path):
    write_mvtec(tmp_path, categories=("bottle",))
    for p in (tmp_path / "bottle" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(AfreqError, match=r"train/good holds no images"):
        read_category(tmp_path / "bottle")


def test_visa_split_lists_missing_file(tmp_path):
    write_raw_visa(tmp_path, objects=("candle",))
    (tmp_path / "candle" / "Data" / "Images" / "Anomaly" / "002.JPG").unlink()
    with pytest.raises(AfreqError, match=r"lists .*002\.JPG, which does not exist"):
        source("visa", tmp_path).samples("candle")
    assert not (tmp_path / "visa_pytorch" / "candle").exists()  # nothing half-converted


def test_data_check_reports_present_and_missing(tmp_path):
    write_mvtec(tmp_path / "mv")
    result = run_cli(["data", "check", "mvtec_ad", "--root", "mv", "--deep"], cwd=tmp_path)
    assert result.returncode == 1  # 13 of 15 categories are missing
    assert "bottle" in result.stdout and "ok" in result.stdout and "missing" in result.stdout
