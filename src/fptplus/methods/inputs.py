"""What a method's model consumes, and everything that depends on it: views, datasets, evaluation items and the
example batch of the benchmarks. A method names one of these; nothing outside `fptplus.methods` asks which.

    ImageView          one view of the image at the model's input size, augmented for training (the baselines)
    SideViewFeatures   the side network's low-resolution view + the frozen model's selected K/V of its fused
                       layers, read from the feature store ("store") or computed from the high-resolution view
                       ("online") (FPT, FPT+)
    PooledFeatures     the frozen model's pooled features, stored or online (the probes)

The kinds that read a feature store also say which store they build (`store_config`) and which they accept
(`check_store`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # this module is imported by the method registry, which loads no torch (the CLI's `--help`)
    from torch import Tensor
    from torch.utils.data import Dataset

    from ..data.views import ViewConfig, Views

SPLITS = ("train", "val", "test")


class ImageView:
    """One image view at the model's input size: `model(image)`."""

    name = "image"

    def sources(self, config: Any) -> tuple[str, ...]:
        """Where training inputs can come from: the image files only."""
        return ("online",)

    def views(self, config: Any, spec: Any, store: Any = None, resize: str = "squash") -> ViewConfig:
        from ..data.views import ViewConfig

        return ViewConfig(config.img_size, config.img_size, spec.mean, spec.std, resize=resize)

    def datasets(self, model: Any, index: Any, ids: dict[str, list[int]], views: Views, seed: int,
                 store: Any = None) -> dict[str, Dataset]:  # fmt: skip
        from ..data.datasets import ImageViewDataset

        return {s: ImageViewDataset(index, ids[s], views, s == "train", seed) for s in SPLITS}

    def eval_item(self, views: Views, hr: Tensor) -> dict[str, Tensor]:
        """The evaluation input of one decoded image (resized to the input size, normalised)."""
        return {"image": views.lpm_view(hr)}

    def example_batch(self, model: Any, config: Any, batch_size: int, device: str, source: str) -> dict[str, Tensor]:
        """Random inputs of the right shapes (benchmarks), with labels."""
        import torch

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
        from ..data.views import ViewConfig

        source = tuple(store.fingerprint["side_source_size"]) if store is not None else None
        return ViewConfig(config.img_size, config.side_size(spec.patch_size), spec.mean, spec.std, source, resize)

    def datasets(self, model: Any, index: Any, ids: dict[str, list[int]], views: Views, seed: int,
                 store: Any = None) -> dict[str, Dataset]:  # fmt: skip
        from ..data.datasets import ImageDataset
        from ..importance import num_selected_tokens
        from ..store.dataset import StoreDataset

        if store is None:
            return {s: ImageDataset(index, ids[s], views, s == "train", seed) for s in SPLITS}

        layers = model.plan.lpm_layers
        k = num_selected_tokens(model.spec.num_tokens, model.config.token_ratio)  # a prefix of a store sorted by
        return {s: StoreDataset(store, ids[s], views, s == "train", layers, seed, k) for s in SPLITS}  # importance

    def eval_item(self, views: Views, hr: Tensor) -> dict[str, Tensor]:
        return {"side": views.side_view(views.side_source(hr), train=False), "lpm": views.lpm_view(hr)}

    def example_batch(self, model: Any, config: Any, batch_size: int, device: str, source: str) -> dict[str, Tensor]:
        import torch

        from ..importance import num_selected_tokens

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


class PooledFeatures(ImageView):
    """The frozen ViT's pooled features: from a feature store ("store") or one un-augmented forward ("online")."""

    name = "pooled frozen features"
    several_sources = True  # tables name the source: "linear (store)"
    reads_any_store = True  # a complete store that holds the features serves, whatever else it was built for

    def sources(self, config: Any) -> tuple[str, ...]:
        return ("store", "online")

    def datasets(self, model: Any, index: Any, ids: dict[str, list[int]], views: Any, seed: int,
                 store: Any = None) -> dict[str, Any]:  # fmt: skip
        if store is None:
            from ..data.datasets import ImageViewDataset

            return {s: ImageViewDataset(index, ids[s], views, False, seed) for s in SPLITS}  # never augmented
        from ..store.dataset import PooledStoreDataset

        return {s: PooledStoreDataset(store, ids[s], model.fields) for s in SPLITS}

    def example_batch(self, model: Any, config: Any, batch_size: int, device: str, source: str) -> dict[str, Tensor]:
        if source == "online":
            return super().example_batch(model, config, batch_size, device, source)
        import torch

        labels = torch.zeros(batch_size, dtype=torch.long, device=device)
        return {"pooled": torch.randn(batch_size, model.feature_dim, device=device), "label": labels}

    def store_config(self, config: Any) -> Any:
        """The store a probe builds when it has none: FPT+'s default for the same backbone and resolution (its
        side depth capped at the ViT's), so FPT+, both probes and their reruns share one preload."""
        from ..backbones import lpm_spec
        from ..model import FPTConfig

        depth = lpm_spec(config.backbone, config.img_size, config.backbone_kwargs).depth
        default = FPTConfig.fpt_plus()
        return FPTConfig.fpt_plus(backbone=config.backbone, backbone_kwargs=dict(config.backbone_kwargs),
                                  weights=config.weights, img_size=config.img_size, num_classes=config.num_classes,
                                  side_depth=min(default.side_depth, depth))  # fmt: skip

    def check_store(self, store: Any, config: Any, index: Any, resize: str) -> None:
        """Any complete store of the same backbone, weights, resolution, normalisation and resize that holds the
        pooled fields serves (its fused layers, token ratio and side size do not matter to a probe)."""
        from ..backbones import lpm_spec, weights_identity
        from ..store.format import StoreError, lpm_identity

        spec = lpm_spec(config.backbone, config.img_size, config.backbone_kwargs)
        want = lpm_identity(spec, config.backbone_kwargs, weights_identity(config.backbone, config.weights), resize)
        store.check_compatible({**store.fingerprint, **want}, index)
        if "cls" not in store.fields:
            raise StoreError(
                f"feature store {store.path} holds no pooled features (its top fused layer, {store.layers[-1]}, is not "
                "the ViT's last block): probe a store whose fused layers include the last block, or train the probe "
                "without --store"
            )
        if any(f not in store.fields for f in config.fields):
            raise StoreError(
                f"feature store {store.path} was written by an older fptplus (store format "
                f"{store.fingerprint['format_version']}) and holds the CLS token but not the mean patch token: rebuild "
                f"it (`fptplus preload ... --out {store.path} --overwrite`, or train the probe without --store), or "
                "probe the CLS token alone with --features cls (the paper's protocol)"
            )
