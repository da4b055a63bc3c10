"""The GPU benchmark's dry run: every code path on the CPU at toy sizes, outputs where told.

One subprocess run (under a minute on two cores) feeds one test, so that pytest-xdist cannot
run it twice; no timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"FAIR on MVTec AD", "FAIR on VisA", "OCR-GAN on MVTec AD",
           *(f"DFD on MVTec AD, {k}-shot" for k in gpu.DFD_SHOTS)}
BEFORE, AFTER = "# Benchmarks\n\nEarlier sections.\n\n", "\n\n## A later section\n"


def defaults() -> dict[str, bytes | None]:
    """The default outputs' contents (None: absent)."""
    return {str(p): p.read_bytes() if p.exists() else None
            for p in (ROOT / gpu.OUT_JSON, ROOT / gpu.OUT_MD)}


def test_dry_run_writes_every_row_where_told(tmp_path):
    md = tmp_path / "x.md"
    # an existing page with an old block between the markers: only the block is replaced
    md.write_text(f"{BEFORE}{gpu.START}\nold figures\n{gpu.END}{AFTER}")
    docs = defaults()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--dry", "--out-json", str(tmp_path / "x.json"),
         "--out-md", str(md)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert defaults() == docs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.md"]
    data = json.loads((tmp_path / "x.json").read_text())
    check_json(data)
    check_markdown(md.read_text())
    check_share_of_peak(data)


def check_json(data: dict) -> None:
    meta = data["meta"]
    assert meta["dry"] and meta["device"] == "cpu" and meta["torch"] and meta["gpu"]
    assert meta["command"].startswith("python -m benchmarks.gpu --dry")
    assert meta["interrupted"] is False
    rows = data["models"]
    assert {(r["method"], r["variant"]) for r in rows} == {
        (m, v) for m in gpu.METHODS for v in gpu.VARIANTS}
    for row in rows:  # the dry run measures everything; nothing fails or is skipped
        for part in ("train", "infer"):
            assert row[part]["status"] == "ok", (row["method"], row["variant"], part, row[part])
        assert row["train"]["step_ms"] > 0 and row["infer"]["images_per_s"] > 0
        assert row["train"]["tflops"] is not None and row["infer"]["tflops"] is not None
        assert row["train"]["peak_gib"] is None  # no CUDA memory on the CPU
    assert {r["batch"] for r in rows if r["method"] == "fair"} == {2, 4}
    flops = {(f["method"], f["batch"]): f for f in data["flops"]}
    assert set(flops) == {(r["method"], r["batch"]) for r in rows}
    for f in flops.values():
        assert f["train_flop_per_step"] > 0 and f["infer_flop_per_image"] > 0
    workers = {(r["workers"], r["cache"]) for r in data["loader"]}
    assert {(0, "disk"), (1, "disk")} <= workers
    for row in data["loader"]:
        assert row["result"]["status"] == "ok" and row["result"]["batches_per_s"] > 0
    wait = data["data_wait"]
    assert wait["status"] == "ok" and 0 <= wait["share"] <= 1
    projections = {p["preset"]: p for p in data["projections"]}
    assert set(projections) == PRESETS
    for p in projections.values():
        assert p["steps"] > 0 and p["gpu_hours"] > 0 and p["variant"] in gpu.VARIANTS
    assert projections["FAIR on MVTec AD"]["train_images"] == 3629
    assert projections["FAIR on VisA"]["train_images"] == 8659
    assert {"dfd_change", "ocrgan_change", "fair_flops"} <= set(data["notes"])


def check_markdown(text: str) -> None:
    assert text.startswith(BEFORE) and text.endswith(AFTER)
    assert text.count(gpu.START) == 1 and text.count(gpu.END) == 1
    assert "old figures" not in text
    for heading in ("### Training and inference", "### Counted FLOPs",
                    "### Training loader", "### Waiting for data in a real fit",
                    "### Projected training time of the paper presets", "### Notes"):
        assert heading in text
    assert text.count("|---|") >= 5  # five tables
    for preset in PRESETS:
        assert f"| {preset} |" in text


def check_share_of_peak(data: dict) -> None:
    assert gpu.peak_tflops("NVIDIA H200") == 989.5
    assert gpu.peak_tflops("NVIDIA H200 NVL") == 835.5
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") is None
    assert all(r["train"]["share_of_peak"] is None for r in data["models"])
    data["meta"]["peak_bf16_tflops"] = 989.5  # as on an H200: shares from the same figures
    gpu.add_rates(data)
    row = data["models"][0]["train"]
    assert row["share_of_peak"] == row["tflops"] / 989.5
    assert "against 989.5 TFLOP/s" in gpu.markdown({**data, "notes": gpu.notes(data)})


def test_splice_appends_without_markers():
    block = f"{gpu.START}\nnew\n{gpu.END}\n"
    assert gpu.splice("", block) == block
    assert gpu.splice("# Page\n", block) == "# Page\n\n" + block
    old = f"a\n{gpu.START}\nold\n{gpu.END}\nb\n"
    assert gpu.splice(old, block) == f"a\n{gpu.START}\nnew\n{gpu.END}\nb\n"


def test_preset_steps_round_per_category():
    assert gpu.preset_steps([9, 16], batch=8, epochs=2, drop_last=False) == (2 + 2) * 2
    assert gpu.preset_steps([9, 16], batch=8, epochs=2, drop_last=True) == (1 + 2) * 2
    assert gpu.preset_steps([5], batch=8, epochs=3, drop_last=True) == 3  # smaller than a batch



def test_make_bench_keeps_the_gpu_section_and_bench_gpu_replaces_only_it():
    from benchmarks.common import END, START, gpu_block, splice

    page = f"# Benchmarks\n\n## CPU\n\nrows\n\n{START}\nold GPU\n{END}\n"
    assert gpu_block(page) == f"{START}\nold GPU\n{END}\n"
    updated = splice(page, f"{START}\nnew GPU\n{END}\n")
    assert "new GPU" in updated and "old GPU" not in updated and "## CPU\n\nrows" in updated
    assert splice("# B\n", f"{START}\nx\n{END}\n").startswith("# B\n\n" + START)
    assert gpu_block("no section") == ""
