"""The LightningDataModule that serves every dataset's samples in the batch format."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from anomaly_freq.data.images import load_image, load_mask
from anomaly_freq.data.mvtec_layout import Sample


class SampleDataset(Dataset):
    """Decodes samples into dicts: image, mask, label, path, category, defect."""

    def __init__(self, samples: Sequence[Sample], category: str, image_size: int) -> None:
        self.samples = list(samples)
        self.category = category
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        return {
            "image": load_image(s.path, self.image_size),
            "mask": load_mask(s.mask, s.path, self.image_size),
            "label": torch.tensor(s.label, dtype=torch.long),
            "path": str(s.path),
            "category": self.category,
            "defect": s.defect,
        }


class AnomalyDataModule(pl.LightningDataModule):
    """Training batches hold normal images only; test/predict batches hold the whole test set."""

    def __init__(
        self,
        train: Sequence[Sample],
        test: Sequence[Sample],
        category: str,
        image_size: int = 256,
        batch_size: int = 8,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_set = SampleDataset(train, category, image_size)
        self.test_set = SampleDataset(test, category, image_size)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
