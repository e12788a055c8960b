"""Training inputs: side view + stored K/V (`StoreDataset`) or side view + LPM view (`ImageDataset`, online).

Both make the side view from the same side source with the same per-sample seed, so for the same sample,
epoch and run seed the two give the same model inputs (the K/V from the store up to its dtype's rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ..store.reader import FeatureStore
from .sources import DataIndex
from .views import Views, sample_seed


class _EpochSeeded(Dataset):
    def __init__(self, indices: Sequence[int], views: Views, train: bool, seed: int) -> None:
        self.indices, self.views, self.train, self.seed = list(indices), views, train, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Augmentations of epoch e are a function of (seed, e, sample): call before each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def _side(self, source: torch.Tensor, i: int) -> torch.Tensor:
        seed = sample_seed(self.seed, self.epoch, i) if self.train else None
        return self.views.side_view(source, self.train, seed)


class StoreDataset(_EpochSeeded):
    """Items {side (3, h, w), keys/values (L, H, k, d), label, index} read from a feature store.

    Args:
        store: a complete feature store.
        indices: store sample indices to serve (e.g. `store.usable("train")`).
        views: view maker (its side size is the model's).
        train: augment the side view.
        layers: LPM layers the model fuses (a subset of the store's); default all stored layers.
        seed: run seed for the augmentation.
    """

    def __init__(
        self,
        store: FeatureStore,
        indices: Sequence[int],
        views: Views,
        train: bool,
        layers: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(indices, views, train, seed)
        self.store = store
        positions = store.layer_positions(tuple(layers)) if layers is not None else None
        self.positions = None if positions == list(range(len(store.layers))) else positions

    def __getitem__(self, j: int) -> dict[str, Any]:
        i = self.indices[j]
        rec = self.store[i]
        keys, values = rec["keys"], rec["values"]
        if self.positions is not None:
            keys, values = keys[self.positions], values[self.positions]
        item = {
            "side": self._side(torch.from_numpy(rec["side"]), i),
            "keys": torch.from_numpy(keys),
            "values": torch.from_numpy(values),
            "label": self.store.samples[i]["label"],
            "index": i,
        }
        if "cls" in rec:
            item["cls"] = torch.from_numpy(rec["cls"])  # (D,): the LPM's pooled feature
        return item


class ImageDataset(_EpochSeeded):
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


class ImageViewDataset(_EpochSeeded):
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
