"""The LightningDataModule that serves every dataset's samples in the batch format.

Training items go through the method's per-sample synthesis (`data.pipeline`) in loader
workers; under DDP each rank trains on its seeded share and predicts a disjoint shard of the
test set, so every test image is scored exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from anomaly_freq.data.cache import DecodeCache
from anomaly_freq.data.fewshot import RotatedCopies
from anomaly_freq.data.images import (
    binarise,
    check_mask_rule,
    check_resize,
    decode_image,
    decode_mask,
)
from anomaly_freq.data.mvtec_layout import Sample
from anomaly_freq.data.pipeline import EpochSampler, SampleTransform, ShardSampler, SynthesisDataset


class SampleDataset(Dataset):
    """Decodes samples into dicts: image, mask, label, path, mask_path, category, defect and
    index (the sample's position, by which predictions from several ranks are merged); under
    ``mask_rule=fair_code`` also ``pro_mask``, the PRO metric's own mask. ``category`` names
    the category of every sample, or maps each sample's path to its own (a unified run's union
    of categories)."""

    def __init__(self, samples: Sequence[Sample], category: str | Mapping[Path, str],
                 image_size: int, crop: int | None = None, cache: DecodeCache | None = None,
                 resize: str = "pil", mask_rule: str = "nearest") -> None:
        self.samples = list(samples)
        self.category, self.size, self.crop = category, image_size, crop
        self.cache = cache or DecodeCache("none")
        self.resize = check_resize(resize)
        # decoded images are cached per resize mode (pil keeps the keys it always had)
        self.geometry = f"{image_size}|{crop}" + ("" if resize == "pil" else f"|{resize}")
        self.mask_rule = check_mask_rule(mask_rule)
        self.mask_key = "mask|" + self.geometry + ("" if mask_rule == "nearest" else "|bilinear")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        image = self.cache.get(s.path, "image|" + self.geometry,
                               lambda: decode_image(s.path, self.size, self.crop, self.resize))
        side = image.shape[0]
        levels = np.zeros((side, side), np.uint8)
        if s.mask is not None:
            levels = self.cache.get(s.mask, self.mask_key,
                                    lambda: decode_mask(s.mask, s.path, self.size, self.crop,
                                                        self.mask_rule))
        pixel, pro = binarise(levels, self.mask_rule)
        extra = {"pro_mask": _plane(pro)} if self.mask_rule == "fair_code" else {}
        category = self.category if isinstance(self.category, str) else self.category[s.path]
        return {
            "image": torch.from_numpy(image).permute(2, 0, 1).float().div_(255),
            "mask": _plane(pixel),
            "label": torch.tensor(s.label, dtype=torch.long),
            "path": str(s.path),
            "mask_path": str(s.mask) if s.mask else "",
            "category": category,
            "defect": s.defect,
            "index": index,
            **extra,
        }


def _plane(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask).float()[None]


def default_workers() -> int:
    """Leave one core to the main process; more than 8 loaders rarely help at 256²."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class AnomalyDataModule(pl.LightningDataModule):
    """Training batches hold normal images only; test, predict and validation batches hold the
    whole test set; calibration batches the normal images that set the threshold
    (`anomaly_freq.run.calibration`)."""

    def __init__(self, train: Dataset, test: Dataset, batch_size: int = 8,
                 eval_batch_size: int = 16, num_workers: int = 0, seed: int = 0,
                 train_transform: SampleTransform | None = None,
                 calibration: Dataset | None = None) -> None:
        super().__init__()
        self.train_set = SynthesisDataset(train, train_transform, seed)
        self.test_set = test
        self.calibration_set = calibration
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed

    @classmethod
    def from_config(cls, d: DictConfig, train: Sequence[Sample], test: Sequence[Sample],
                    category: str | Mapping[Path, str], cache: DecodeCache,
                    train_transform: SampleTransform | None = None,
                    shot_fill: str = "zero",
                    calibration: Sequence[Sample] = (), *, seed: int) -> AnomalyDataModule:
        """From the run's ``dataset`` section ``d``; ``seed`` keys the training draws."""
        workers = default_workers() if d.num_workers is None else int(d.num_workers)
        if cache.mode == "memory" and workers > 0:
            cache = DecodeCache("disk", cache.folder)  # worker processes cannot share a dict

        def make(samples: Sequence[Sample]) -> SampleDataset:
            return SampleDataset(samples, category, d.image_size, d.center_crop, cache, d.resize,
                                 d.mask_rule)

        train_set = make(train)
        if d.shot_copies:
            train_set = RotatedCopies(train_set, d.shot_copies, d.shot_rotation, d.shot_seed,
                                      shot_fill)
        return cls(train_set, make(test), d.batch_size, d.eval_batch_size, workers, seed,
                   train_transform, make(calibration))

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler) -> DataLoader:
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=on_gpu)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._ranks()
        sampler = EpochSampler(len(self.train_set), self.seed, rank, world)
        return self._loader(self.train_set, self.batch_size, sampler)

    def test_dataloader(self) -> DataLoader:
        return self._scoring_loader(self.test_set)

    def calibration_dataloader(self) -> DataLoader:
        return self._scoring_loader(self.calibration_set)

    def _scoring_loader(self, dataset: Dataset) -> DataLoader:
        return self._loader(dataset, self.eval_batch_size,
                            ShardSampler(len(dataset), *self._ranks()))

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def val_dataloader(self) -> DataLoader:
        """The test set again: validation is the test-set monitor (``eval.test_every_n_epochs``),
        and the Trainer runs it only when that is on."""
        return self.test_dataloader()

    def test_part_dataloader(self, indices: Sequence[int]) -> DataLoader:
        """Scoring batches of the test images at ``indices`` (a unified run scores each
        category's test set apart)."""
        return self._scoring_loader(Subset(self.test_set, indices))
