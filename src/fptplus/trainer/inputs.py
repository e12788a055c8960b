"""Which dataset feeds which method: side view + stored K/V, side view + LPM view, or one image view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..backbones import LPMSpec
from ..data.datasets import EpochSeeded
from ..data.sources import DataIndex
from ..data.views import Views
from ..store.reader import FeatureStore


@dataclass
class Inputs:
    """Datasets of the three splits and where they read from ("store" or "online")."""

    train: Dataset
    val: Dataset
    test: Dataset
    source: str
    views: Views


def view_config(method: Any, model_cfg: Any, spec: LPMSpec, store: FeatureStore | None, resize: str = "squash"):
    """The views of a method's model (from the store's own side source size when it trains from one)."""
    return method.inputs.views(model_cfg, spec, store, resize)


def make_inputs(
    method: Any,
    model: Any,
    model_cfg: Any,
    index: DataIndex,
    store: FeatureStore | None,
    usable: list[int],
    seed: int,
    resize: str = "squash",
) -> Inputs:
    """Datasets of the three splits for a method's model, from the feature store when given, else the images.

    Args:
        method: the registered method (its `inputs` say what the model consumes).
        model: the built model (its spec gives the normalisation; an FPT plan says which layers are needed).
        model_cfg: its config.
        index: the dataset.
        store: the feature store, or None to read the images.
        usable: sample indices that decode (all, minus skipped files).
        seed: run seed (augmentation).
        resize: "squash" or "pad" (how images reach the input size; a store records its own).
    """
    ids = {s: [i for i in usable if index.samples[i].split == s] for s in ("train", "val", "test")}
    views = Views(view_config(method, model_cfg, model.spec, store, resize))
    sets = method.inputs.datasets(model, index, ids, views, seed, store)
    return Inputs(sets["train"], sets["val"], sets["test"], "store" if store is not None else "online", views)


def epoch_loader(dataset: Dataset, batch_size: int, workers: int, seed: int, epoch: int) -> DataLoader:
    """Training loader whose order is a function of (seed, epoch) only, so a resumed run sees the same order."""
    if isinstance(dataset, EpochSeeded):
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
