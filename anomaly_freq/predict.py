"""`afreq predict`: score new images with a saved checkpoint and write heatmaps."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from anomaly_freq.bench.rundir import write_atomic
from anomaly_freq.checkpoint import load_checkpoint
from anomaly_freq.data.images import decode_image
from anomaly_freq.data.mvtec_layout import IMAGE_EXTENSIONS
from anomaly_freq.errors import AfreqError


def find_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise AfreqError(f"images folder {folder} does not exist")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise AfreqError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return found


@torch.no_grad()
def predict_folder(checkpoint: Path, images: Path, out_dir: Path | None = None,
                   expected_method: str | None = None, batch_size: int = 8) -> Path:
    """Score every image under ``images``; write scores.csv and heatmaps/ into ``out_dir``."""
    method, cfg = load_checkpoint(checkpoint, expected_method)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method.to(device)
    paths = find_images(images)
    out_dir = out_dir or Path(cfg.output.root) / "predict" / cfg.method.name / time.strftime(
        "%Y%m%d-%H%M%S")
    size, crop = cfg.dataset.image_size, cfg.dataset.center_crop
    resize = OmegaConf.select(cfg, "dataset.resize", default="pil")  # older checkpoints: pil
    pictures, maps, scores = [], [], []
    for start in range(0, len(paths), batch_size):
        chunk = [decode_image(p, size, crop, resize)
                 for p in paths[start:start + batch_size]]
        batch = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float().div(255)
        out = method.predict_step({"image": batch.to(device)}, 0)
        pictures += chunk
        maps += list(out["anomaly_map"][:, 0].float().cpu().numpy())
        scores += out["pred_score"].float().cpu().tolist()
    (out_dir / "heatmaps").mkdir(parents=True, exist_ok=True)
    low, high = min(m.min() for m in maps), max(m.max() for m in maps)
    for path, picture, amap in zip(paths, pictures, maps, strict=True):
        name = "__".join(path.relative_to(images).parts)
        if path.suffix.lower() != ".png":  # x.jpg → x.jpg.png, so that it cannot overwrite x.png
            name += ".png"
        Image.fromarray(overlay(picture, amap, low, high)).save(out_dir / "heatmaps" / name)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "pred_score"])
    writer.writerows(zip(map(str, paths), scores, strict=True))
    write_atomic(out_dir / "scores.csv", buffer.getvalue())
    return out_dir


def overlay(picture: np.ndarray, amap: np.ndarray, low: float, high: float) -> np.ndarray:
    """Image and its heatmap side by side; the map is scaled by ``low..high`` of the whole set."""
    from matplotlib import colormaps

    if amap.shape != picture.shape[:2]:
        amap = np.asarray(Image.fromarray(amap).resize(picture.shape[1::-1], Image.BILINEAR))
    scaled = np.clip((amap - low) / max(high - low, 1e-12), 0, 1)
    heat = (colormaps["jet"](scaled)[..., :3] * 255).astype(np.float32)
    blend = (0.5 * picture + 0.5 * heat).astype(np.uint8)
    return np.concatenate([picture, blend], axis=1)
