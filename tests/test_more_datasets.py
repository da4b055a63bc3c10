"""DAGM 2007, KolektorSDD and CIFAR-10 readers on miniature files in their real formats."""

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from anomaly_freq import registry
from anomaly_freq.config import load_config
from anomaly_freq.data.datamodule import SampleDataset
from anomaly_freq.errors import AfreqError
from tests.conftest import run_cli

FAST = ["dataset.image_size=32", "eval.resolution=32", "trainer.enable_progress_bar=false",
        "dataset.num_workers=0"]


def _texture(rng, size=64, defect=False):
    image = rng.integers(90, 140, (size, size), dtype=np.uint8)
    label = np.zeros((size, size), np.uint8)
    if defect:
        label[20:30, 25:40] = 255
        image[label > 0] = 250
    return image, label


def write_dagm(root, cls="Class1", n_train=(6, 2), n_test=(3, 3)):
    rng = np.random.default_rng(0)
    for split, (normal, defective) in (("Train", n_train), ("Test", n_test)):
        folder = root / cls / split
        (folder / "Label").mkdir(parents=True)
        lines = ["1"]
        for i in range(normal + defective):
            name = f"{i + 1:04d}.PNG"
            image, label = _texture(rng, defect=i >= normal)
            Image.fromarray(image).save(folder / name)
            if i >= normal:
                Image.fromarray(label).save(folder / "Label" / f"{i + 1:04d}_label.PNG")
                lines.append(f"{i + 1}\t1\t{name}\t0\t{i + 1:04d}_label.PNG")
            else:
                lines.append(f"{i + 1}\t0\t{name}\t0")
        (folder / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return root


def write_kolektor(root, parts=5, per_part=8, defective=(0, 3)):
    rng = np.random.default_rng(1)
    for k in range(1, parts + 1):
        folder = root / f"kos{k:02d}"
        folder.mkdir(parents=True)
        for i in range(per_part):
            image, label = _texture(rng, defect=(k, i) in {(1, defective[0]), (2, defective[1])}
                                    or (i == 7 and k <= 3))
            Image.fromarray(image).save(folder / f"Part{i}.jpg")
            Image.fromarray(label).save(folder / f"Part{i}_label.bmp")
    return root


def write_cifar(root, per_batch=40):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 10 for i in range(per_batch)]
        data = rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8)
        for row, label in enumerate(labels):  # make class 0 brighter: something to detect
            data[row] = data[row] // 2 + (127 if label == 0 else 0)
        with (folder / name).open("wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * per_batch}, handle)
    return root


def source(name, root, *more):
    cfg = load_config([f"dataset={name}", f"dataset.root={root}", *more])
    return registry.create_dataset(name, cfg)


def test_dagm_reads_labels_and_runs(tmp_path):
    write_dagm(tmp_path / "dagm")
    train, test = source("dagm", tmp_path / "dagm").samples("class1")
    assert len(train) == 6 and all(s.label == 0 for s in train)
    assert [s.label for s in test] == [0, 0, 0, 1, 1, 1]
    assert test[-1].mask.name == "0006_label.PNG"
    result = run_cli(["run", "dataset=dagm", "dataset.root=dagm", "dataset.category=class1",
                      *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (metrics,) = (tmp_path / "runs" / "freqstat" / "dagm" / "class1").glob("*/metrics.json")
    assert "pixel_auroc" in json.loads(metrics.read_text())


def test_dagm_bad_input(tmp_path):
    write_dagm(tmp_path)
    (tmp_path / "Class1" / "Test" / "Label" / "Labels.txt").unlink()
    with pytest.raises(AfreqError, match=r"Class1/Test/Label/Labels.txt is missing"):
        source("dagm", tmp_path).samples("class1")
    write_dagm(tmp_path / "b")
    label = tmp_path / "b" / "Class1" / "Test" / "Label" / "0004_label.PNG"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(label)
    _, test = source("dagm", tmp_path / "b").samples("class1")
    with pytest.raises(AfreqError, match=r"0004_label\.PNG is 10×10 but its image"):
        SampleDataset([s for s in test if s.mask == label], "class1", 32)[0]


def test_kolektor_split_and_run(tmp_path):
    write_kolektor(tmp_path / "ksdd")
    src = source("kolektorsdd", tmp_path / "ksdd")
    train, test = src.samples("kolektorsdd")
    defective = [s for s in test if s.label]
    assert len(defective) == 5 and all(s.mask.suffix == ".bmp" for s in defective)
    normal_test = [s for s in test if not s.label]
    assert len(normal_test) == round(0.2 * 35) and len(train) == 35 - len(normal_test)
    assert not {s.path for s in train} & {s.path for s in test}
    assert src.samples("kolektorsdd") == (train, test)  # the split is fixed by its seed
    other, _ = source("kolektorsdd", tmp_path / "ksdd", "dataset.split_seed=1").samples(
        "kolektorsdd")
    assert other != train
    result = run_cli(["run", "dataset=kolektorsdd", "dataset.root=ksdd", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("protocol", ["s1", "s2"])
def test_cifar_protocols(tmp_path, protocol):
    write_cifar(tmp_path / "cifar")
    train, test = source("cifar10", tmp_path / "cifar", f"dataset.protocol={protocol}").samples(
        "airplane")
    if protocol == "s1":
        assert len(train) == 5 * 4 and len(test) == 40
        assert sum(s.label for s in test) == 36
    else:
        assert len(train) == 5 * 36 and len(test) == 36 + 6 * 4
        assert sum(s.label for s in test) == 24
    result = run_cli(["run", "dataset=cifar10", "dataset.root=cifar",
                      f"dataset.protocol={protocol}", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (metrics,) = (tmp_path / "runs" / "freqstat" / "cifar10" / "airplane").glob("*/metrics.json")
    values = json.loads(metrics.read_text())
    assert "pixel_auroc" not in values and 0 <= values["image_auroc"] <= 1


def test_cifar_bad_batch_file(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(AfreqError, match=r"data_batch_3 is not a CIFAR-10 python batch file"):
        source("cifar10", tmp_path).samples("cat")
    with (tmp_path / "cifar-10-batches-py" / "data_batch_3").open("wb") as handle:
        pickle.dump({b"data": np.zeros((4, 10), np.uint8), b"labels": [0] * 4}, handle)
    with pytest.raises(AfreqError, match=r"data_batch_3: data has shape \(4, 10\)"):
        source("cifar10", tmp_path).samples("cat")


def test_cifar_refuses_pickled_code(tmp_path):
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": []}, handle)
    with pytest.raises(AfreqError, match="refusing to load builtins.print"):
        source("cifar10", tmp_path).samples("cat")


def test_dagm_download_explains_the_manual_step(tmp_path):
    result = run_cli(["data", "download", "dagm", "--root", "d"], cwd=tmp_path)
    assert result.returncode == 2 and "Class1 … Class10" in result.stderr


OCRGAN_TINY = ["method=ocrgan", "model.ngf=4", "model.ndf=4", "dataset.batch_size=4",
               "trainer.max_epochs=1", *FAST]


@pytest.mark.parametrize("name,write,category", [
    ("dagm", write_dagm, "class1"), ("kolektorsdd", write_kolektor, "kolektorsdd"),
    ("cifar10", write_cifar, "airplane")])
def test_ocrgan_runs_on_each_dataset(tmp_path, name, write, category):
    write(tmp_path / name)
    result = run_cli(["run", f"dataset={name}", f"dataset.root={name}",
                      f"dataset.category={category}", *OCRGAN_TINY],
                     cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "runs" / "ocrgan" / name / category).glob("*/metrics.json")
    values = json.loads(run.read_text())
    assert 0 <= values["image_auroc"] <= 1
    assert ("pixel_auroc" in values) == (name != "cifar10")  # CIFAR-10 has no masks
    protocol = json.loads((run.parent / "protocol.json").read_text())
    assert protocol["dataset"] == name
