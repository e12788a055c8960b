"""Which dataset feeds which method: side view + stored K/V, side view + LPM view, or one image view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..backbone import LPMSpec
from ..data.datasets import ImageDataset, ImageViewDataset
from ..data.sources import DataIndex
from ..data.views import ViewConfig, Views
from ..store.dataset import StoreDataset
from ..store.reader import FeatureStore


@dataclass
class Inputs:
    """Datasets of the three splits and where they read from ("store" or "online")."""

    train: Dataset
    val: Dataset
    test: Dataset
    source: str
    views: Views


def view_config(model_cfg: Any, spec: LPMSpec, store: FeatureStore | None, resize: str = "squash") -> ViewConfig:
    """The views of a model: FPT/FPT+ (side size from its config) or a baseline (one view at its input size)."""
    source = tuple(store.fingerprint["side_source_size"]) if store is not None else None
    side = model_cfg.side_size(spec.patch_size) if hasattr(model_cfg, "side_size") else model_cfg.img_size
    return ViewConfig(model_cfg.img_size, side, spec.mean, spec.std, source, resize)


def make_inputs(
    model: Any,
    model_cfg: Any,
    index: DataIndex,
    store: FeatureStore | None,
    usable: list[int],
    seed: int,
    kind: str = "fpt",
    resize: str = "squash",
) -> Inputs:
    """Datasets for a model: FPT/FPT+ from the store when given (else online), baselines one image view.

    Args:
        model: the built model (its spec gives the normalisation; an FPT plan says which layers are needed).
        model_cfg: its config.
        index: the dataset.
        store: the feature store, or None for online training.
        usable: sample indices that decode (all, minus skipped files).
        seed: run seed (augmentation).
        kind: the method's input kind, "fpt" or "image".
        resize: "squash" or "pad" (how images reach the input size; a store records its own).
    """
    split_ids = {s: [i for i in usable if index.samples[i].split == s] for s in ("train", "val", "test")}
    if kind == "image":
        spec = model.spec
        views = Views(ViewConfig(model_cfg.img_size, model_cfg.img_size, spec.mean, spec.std, resize=resize))

        def make(split: str, train: bool) -> Dataset:
            return ImageViewDataset(index, split_ids[split], views, train, seed)

        return Inputs(make("train", True), make("val", False), make("test", False), "online", views)
    views = Views(view_config(model_cfg, model.spec, store, resize))
    if store is not None:
        layers = model.plan.lpm_layers

        def make(split: str, train: bool) -> Dataset:
            return StoreDataset(store, split_ids[split], views, train, layers, seed)

        source = "store"
    else:

        def make(split: str, train: bool) -> Dataset:
            return ImageDataset(index, split_ids[split], views, train, seed)

        source = "online"
    return Inputs(make("train", True), make("val", False), make("test", False), source, views)


def epoch_loader(dataset: Dataset, batch_size: int, workers: int, seed: int, epoch: int) -> DataLoader:
    """Training loader whose order is a function of (seed, epoch) only, so a resumed run sees the same order."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=generator),
        num_workers=workers,
        drop_last=False,
        generator=generator,
    )


def eval_loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    """In-order loader; its own generator keeps evaluation from touching the global RNG."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )
