"""What a method's model consumes, and everything that depends on it: views, datasets, evaluation items and the
example batch of the benchmarks. A method names one of these; nothing outside `fptplus.methods` asks which.

    ImageView          one view of the image at the model's input size, augmented for training (the baselines)
    SideViewFeatures   the side network's low-resolution view + the frozen model's selected K/V of its fused
                       layers, read from the feature store ("store") or computed from the high-resolution view
                       ("online") (FPT, FPT+)
    PooledFeatures     the frozen model's pooled features, stored or online (the probes; in `probe.py`)

The kinds that read a feature store also say which store they build (`store_config`) and which they accept
(`check_store`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data.datasets import ImageDataset, ImageViewDataset
from ..data.views import ViewConfig, Views
from ..importance import num_selected_tokens

SPLITS = ("train", "val", "test")


class ImageView:
    """One image view at the model's input size: `model(image)`."""

    name = "image"

    def sources(self, config: Any) -> tuple[str, ...]:
        """Where training inputs can come from: the image files only."""
        return ("online",)

    def views(self, config: Any, spec: Any, store: Any = None, resize: str = "squash") -> ViewConfig:
        return ViewConfig(config.img_size, config.img_size, spec.mean, spec.std, resize=resize)

    def datasets(self, model: Any, index: Any, ids: dict[str, list[int]], views: Views, seed: int,
                 store: Any = None) -> dict[str, Dataset]:  # fmt: skip
        return {s: ImageViewDataset(index, ids[s], views, s == "train", seed) for s in SPLITS}

    def eval_item(self, views: Views, hr: Tensor) -> dict[str, Tensor]:
        """The evaluation input of one decoded image (resized to the input size, normalised)."""
        return {"image": views.lpm_view(hr)}

    def example_batch(self, model: Any, config: Any, batch_size: int, device: str, source: str) -> dict[str, Tensor]:
        """Random inputs of the right shapes (benchmarks), with labels."""
        h, w = model.spec.img_size
        labels = torch.zeros(batch_size, dtype=torch.long, device=device)
        return {"image": torch.randn(batch_size, 3, h, w, device=device), "label": labels}


class SideViewFeatures:
    """The side view plus the frozen model's fused-layer K/V: from the feature store or online."""

    name = "side view + frozen features"
    several_sources = True  # tables name the source: "fpt_plus (store)"

    def sources(self, config: Any) -> tuple[str, ...]:
        """A model with fused layers trains from the store (or online); the side network alone only online."""
        return ("store", "online") if getattr(config, "fused_layers", None) != 0 else ("online",)

    def store_config(self, config: Any) -> Any:
        """The model config whose fused layers, resolution and token ratio the store keeps: the model's own."""
        return config

    def check_store(self, store: Any, config: Any, index: Any, resize: str) -> None:
        """Refuses a store made by another LPM setup or for other images (a store with more layers serves)."""
        from ..store.plan import store_spec

        expected = store_spec(config, tuple(store.fingerprint["side_source_size"]), resize=resize)
        store.check_compatible(expected.fingerprint, index)

    def views(self, config: Any, spec: Any, store: Any = None, resize: str = "squash") -> ViewConfig:
        source = tuple(store.fingerprint["side_source_size"]) if store is not None else None
        return ViewConfig(config.img_size, config.side_size(spec.patch_size), spec.mean, spec.std, source, resize)

    def datasets(self, model: Any, index: Any, ids: dict[str, list[int]], views: Views, seed: int,
                 store: Any = None) -> dict[str, Dataset]:  # fmt: skip
        if store is None:
            return {s: ImageDataset(index, ids[s], views, s == "train", seed) for s in SPLITS}
        from ..store.dataset import StoreDataset

        layers = model.plan.lpm_layers
        k = num_selected_tokens(model.spec.num_tokens, model.config.token_ratio)  # a prefix of a store sorted by
        return {s: StoreDataset(store, ids[s], views, s == "train", layers, seed, k) for s in SPLITS}  # importance

    def eval_item(self, views: Views, hr: Tensor) -> dict[str, Tensor]:
        return {"side": views.side_view(views.side_source(hr), train=False), "lpm": views.lpm_view(hr)}

    def example_batch(self, model: Any, config: Any, batch_size: int, device: str, source: str) -> dict[str, Tensor]:
        h, w = model.side.img_size
        labels = torch.zeros(batch_size, dtype=torch.long, device=device)
        batch = {"side": torch.randn(batch_size, 3, h, w, device=device), "label": labels}
        if not model.uses_lpm:
            return batch
        if source == "online":
            batch["lpm"] = torch.randn(batch_size, 3, *model.spec.img_size, device=device)
            return batch
        k = num_selected_tokens(model.spec.num_tokens, config.token_ratio)
        shape = (batch_size, len(model.plan.lpm_layers), model.spec.num_heads, k, model.spec.head_dim)
        batch["keys"] = torch.randn(shape, device=device, dtype=torch.float16)  # what the store delivers
        batch["values"] = torch.randn(shape, device=device, dtype=torch.float16)
        return batch
