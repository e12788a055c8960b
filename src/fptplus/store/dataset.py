"""`StoreDataset`: training inputs read from a feature store (side view cut from the stored side source + the
stored K/V of the fused layers), the counterpart of `fptplus.data.datasets.ImageDataset` (same side views).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ..data.datasets import EpochSeeded
from ..data.views import Views
from ..lpm import KV_FIELDS
from .reader import FeatureStore


class StoreDataset(EpochSeeded):
    """Items {side (3, h, w), keys/values (L, H, k, d), label, index} read from a feature store (int8 stores add
    keys_scale/values_scale (L, H, k)). The pooled features a store may hold are read by the probes, not here.

    Args:
        store: a complete feature store.
        indices: store sample indices to serve (e.g. `store.usable("train")`).
        views: view maker (its side size is the model's).
        train: augment the side view.
        layers: LPM layers the model fuses (a subset of the store's); default all stored layers.
        seed: run seed for the augmentation.
        k: tokens per head the model reads: the first k of the store's (kept best first), default all.
    """

    def __init__(
        self,
        store: FeatureStore,
        indices: Sequence[int],
        views: Views,
        train: bool,
        layers: Sequence[int] | None = None,
        seed: int = 0,
        k: int | None = None,
    ) -> None:
        super().__init__(indices, views, train, seed)
        self.store = store
        self.k = None if k is None or k >= store.num_selected else k
        positions = store.layer_positions(tuple(layers)) if layers is not None else None
        self.positions = None if positions == list(range(len(store.layers))) else positions

    def sample_name(self, j: int) -> str:
        return str(self.store.samples[self.indices[j]].get("path", ""))

    def __getitem__(self, j: int) -> dict[str, Any]:
        i = self.indices[j]
        rec = self.store.features(i)  # decoded by the store's codec
        item = {"side": self._side(rec["side"], i), "label": self.store.samples[i]["label"], "index": i}
        for f in KV_FIELDS:  # (L, H, k, d) / scales (L, H, k)
            if f in rec:
                value = rec[f] if self.positions is None else rec[f][self.positions]
                if self.k is not None:  # the best k: a lower ratio than the store's
                    value = value[:, :, : self.k]
                item[f] = value
        return item


class PooledStoreDataset(Dataset):
    """Items {pooled (F,) float32, label, index}: a store's pooled fields concatenated (e.g. cls ⊕ patch_mean), what
    the frozen-feature probes read.

    Args:
        store: a complete feature store holding the fields.
        indices: store sample indices to serve.
        fields: pooled fields in order, e.g. ("cls", "patch_mean").
    """

    def __init__(self, store: FeatureStore, indices: Sequence[int], fields: Sequence[str]) -> None:
        self.store, self.indices, self.fields = store, list(indices), tuple(fields)

    def __len__(self) -> int:
        return len(self.indices)

    def sample_name(self, j: int) -> str:
        return str(self.store.samples[self.indices[j]].get("path", ""))

    def __getitem__(self, j: int) -> dict[str, Any]:
        i = self.indices[j]
        rec = self.store.features(i)  # decoded by the store's codec
        pooled = torch.cat([rec[f].float() for f in self.fields])  # (F,)
        return {"pooled": pooled, "label": self.store.samples[i]["label"], "index": i}
