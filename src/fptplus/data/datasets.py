"""Training inputs read from the image files: side view + LPM view (`ImageDataset`, FPT/FPT+ online) or one
view (`ImageViewDataset`, the baselines). Their stored-feature counterpart is `fptplus.store.dataset.StoreDataset`.

`ImageDataset` and `StoreDataset` make the side view from the same side source with the same per-sample seed, so
for the same sample, epoch and run seed the two give the same model inputs (the K/V up to the store's rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from .sources import DataIndex
from .views import Views, sample_seed


class EpochSeeded(Dataset):
    """A dataset whose augmentation is a function of (run seed, epoch, sample)."""

    def __init__(self, indices: Sequence[int], views: Views, train: bool, seed: int) -> None:
        self.indices, self.views, self.train, self.seed = list(indices), views, train, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Augmentations of epoch e are a function of (seed, e, sample): call before each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def sample_name(self, j: int) -> str:
        """The path of the j-th sample served (as the dataset records it), for prediction tables."""
        return str(self.index.samples[self.indices[j]].path)

    def _side(self, source: torch.Tensor, i: int) -> torch.Tensor:
        seed = sample_seed(self.seed, self.epoch, i) if self.train else None
        return self.views.side_view(source, self.train, seed)


class ImageDataset(EpochSeeded):
    """Items {side (3, h, w), lpm (3, H, W), label, index} decoded from the image files (online mode)."""

    def __init__(self, index: DataIndex, indices: Sequence[int], views: Views, train: bool, seed: int = 0) -> None:
        super().__init__(indices, views, train, seed)
        self.index = index

    def __getitem__(self, j: int) -> dict[str, Any]:
        i = self.indices[j]
        sample = self.index.samples[i]
        hr = self.views.high_res(self.index.load(i).image)
        return {
            "side": self._side(self.views.side_source(hr), i),
            "lpm": self.views.lpm_view(hr),
            "label": sample.label,
            "index": i,
        }


class ImageViewDataset(EpochSeeded):
    """Items {image (3, H, W), label, index}: one view at the model's resolution (the baselines' input)."""

    def __init__(self, index: DataIndex, indices: Sequence[int], views: Views, train: bool, seed: int = 0) -> None:
        super().__init__(indices, views, train, seed)
        self.index = index

    def __getitem__(self, j: int) -> dict[str, Any]:
        i = self.indices[j]
        sample = self.index.samples[i]
        hr = self.views.high_res(self.index.load(i).image)
        seed = sample_seed(self.seed, self.epoch, i) if self.train else None
        return {"image": self.views.image_view(hr, self.train, seed), "label": sample.label, "index": i}
