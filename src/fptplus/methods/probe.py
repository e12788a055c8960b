"""Frozen-feature probes, the yardsticks every frozen-backbone method is compared with (DINOv2's linear evaluation):

    linear   L2-regularised logistic regression fitted to convergence (L-BFGS), C chosen by cross-validation
    knn      cosine k-nearest neighbours (uniform votes), k chosen by the same cross-validation

Both read the frozen ViT's final-normed CLS token ⊕ mean patch token at `img_size` (`features: cls` keeps the CLS
token alone, the paper's protocol), standardised with the fit rows' statistics; the hyper-parameter is chosen by
patient-grouped, class-stratified k-fold cross-validation on train + val (`fptplus.data.folds`, the builder
`--folds` uses), then the probe is refitted on train + val. The features come from a feature store — any FPT/FPT+
store of the same backbone, weights, resolution, normalisation and resize whose top fused layer is the ViT's last
block: one forward pass serves FPT+, both probes and every rerun — or online, one un-augmented forward per image.
The fitting lives in `probe_fit`, the run in `fptplus.trainer.probe`. The paper's own protocol, a linear head
trained by AdamW for 20 epochs on augmented online views, is `linear_adamw` (`simple.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..backbones import LPMSpec, family_of, lpm_spec
from ..errors import ConfigError
from ..params import ParamCount
from . import Method, register
from .baseline import BaselineConfig, base_vit
from .inputs import SPLITS, ImageView
from .probe_fit import (
    CVResult,
    LogisticFit,
    Standardizer,
    Task,
    cross_validate,
    fit_logistic,
    knn_probs,
    logistic_probs,
    one_hot_targets,
)

FEATURES = {"cls+patch_mean": ("cls", "patch_mean"), "cls": ("cls",)}  # feature name -> stored pooled fields
EPS = 1e-6  # kNN vote shares become logits through log(max(p, EPS)) (softmax gives p back to ~C·EPS)


@dataclass
class ProbeConfig(BaselineConfig):
    """A probe on the frozen ViT's pooled features.

    Attributes:
        features: "cls+patch_mean" (the final-normed CLS token concatenated with the mean of the final-normed patch
            tokens, DINOv2's linear evaluation) or "cls" (the CLS token alone, the paper's linear probing).
        cv_folds: folds of the cross-validation on train + val that chooses the probe's hyper-parameter
            (patient-grouped, class-stratified, seeded by the run seed; fewer when a class has fewer images or
            groups, at least 2).
    """

    features: Literal["cls+patch_mean", "cls"] = "cls+patch_mean"
    cv_folds: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.features not in FEATURES:
            raise ConfigError(f"features must be one of {sorted(FEATURES)}, got {self.features!r}")
        if self.cv_folds < 2:
            raise ConfigError(f"cv_folds must be >= 2, got {self.cv_folds}")

    @property
    def fields(self) -> tuple[str, ...]:
        """The stored pooled fields the features concatenate."""
        return FEATURES[self.features]


def _c_grid() -> list[float]:
    return [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0]


@dataclass
class LinearProbeConfig(ProbeConfig):
    """The logistic-regression probe.

    Attributes:
        c_grid: inverse regularisation strengths tried (scikit-learn's C: larger = weaker L2 penalty on the
            standardised features), most regularised first; the cross-validation keeps the best.
    """

    c_grid: list[float] = field(default_factory=_c_grid)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.c_grid or any(not c > 0 for c in self.c_grid):
            raise ConfigError(f"c_grid must be a non-empty list of numbers > 0, got {self.c_grid}")
        self.c_grid = sorted(float(c) for c in self.c_grid)


@dataclass
class KNNProbeConfig(ProbeConfig):
    """The k-nearest-neighbour probe.

    Attributes:
        k_grid: neighbour counts tried (those above the fit rows of a fold are left out); the cross-validation keeps
            the best.
    """

    k_grid: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20, 50])

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.k_grid or any(k < 1 for k in self.k_grid):
            raise ConfigError(f"k_grid must be a non-empty list of integers >= 1, got {self.k_grid}")
        self.k_grid = sorted(set(int(k) for k in self.k_grid), reverse=True)  # most smoothing first


class LinearHead(nn.Module):
    """Logits (B, C) = Linear(F → C) of the raw features; the fit folds the standardisation into it."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, f: Tensor) -> Tensor:
        return self.linear(f)  # (B, F) -> (B, C)

    @torch.no_grad()
    def load_fit(self, fit: LogisticFit, scaler: Standardizer, task: Task) -> None:
        """W' = W / std, b' = b − W' · mean (the standardisation folded in); a binary fit's one row becomes class 1's
        logit with class 0's fixed at 0, so softmax gives the fitted sigmoid."""
        weight = fit.weight / scaler.std  # (m, F)
        bias = fit.bias - weight @ scaler.mean  # (m,)
        if task == "binary":
            weight = torch.cat([torch.zeros_like(weight), weight])  # (2, F)
            bias = torch.cat([torch.zeros_like(bias), bias])
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(bias)


class KNNHead(nn.Module):
    """Cosine kNN over a bank of standardised fit features; logits log(vote share) (multi-label: logit(share)).

    Its state is fitted, not learned: buffers that the checkpoint keeps (`fitted_state`) and whose sizes are the
    data's. Until fitted it holds one neutral bank row (uniform votes).
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("bank", torch.zeros(1, dim))  # (n, F), standardised
        self.register_buffer("targets", torch.full((1, num_classes), 1.0 / num_classes))  # (n, C)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("k", torch.tensor(1))
        self.register_buffer("multilabel", torch.tensor(False))
        self._k, self._multilabel = 1, False  # the two scalars as Python values (readable on the meta device too)

    def forward(self, f: Tensor) -> Tensor:
        query = (f - self.mean) / self.std  # (B, F)
        p = knn_probs(self.bank, self.targets, query, min(self._k, len(self.bank)))  # (B, C)
        if self._multilabel:
            p = p.clamp(EPS, 1 - EPS)
            return torch.log(p) - torch.log1p(-p)  # sigmoid gives p back
        return torch.log(p.clamp_min(EPS))

    @torch.no_grad()
    def load_fit(self, bank: Tensor, targets: Tensor, scaler: Standardizer, k: int, multilabel: bool) -> None:
        self.load_state({"bank": scaler(bank), "targets": targets, "mean": scaler.mean, "std": scaler.std,
                         "k": torch.tensor(k), "multilabel": torch.tensor(multilabel)})  # fmt: skip

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        for name, value in tensors.items():
            old = getattr(self, name)
            setattr(self, name, value.detach().to(dtype=old.dtype, device=old.device).clone())
        self._k, self._multilabel = int(self.k), bool(self.multilabel)


class ProbeModel(nn.Module):
    """`head(pooled(image))`: the frozen ViT's pooled features through a fitted head.

    Attributes:
        vit: the frozen ViT (None when the model reads stored features: `source="store"`).
        spec: its shape facts (normalisation, patch size, parameter count).
        fields: the pooled fields concatenated into the features, e.g. ("cls", "patch_mean").
        head: `LinearHead` or `KNNHead`.
    """

    def __init__(self, vit: nn.Module | None, spec: LPMSpec, fields: tuple[str, ...], head: nn.Module) -> None:
        super().__init__()
        self.vit, self.spec, self.fields, self.head = vit, spec, fields, head
        if vit is not None:
            vit.requires_grad_(False)
            vit.eval()

    def train(self, mode: bool = True) -> ProbeModel:
        super().train(mode)
        if self.vit is not None:
            self.vit.eval()  # frozen: fixed features
        return self

    @property
    def feature_dim(self) -> int:
        return self.spec.embed_dim * len(self.fields)

    @torch.no_grad()
    def pooled(self, image: Tensor) -> Tensor:
        """image (B, 3, H, W) normalised -> features (B, F), F = D · len(fields)."""
        if self.vit is None:
            raise ConfigError("this probe was built without its ViT (source='store'): pass stored pooled features")
        out = family_of(self.spec.name).forward_to(self.vit, image, self.spec.depth - 1, pooled=True)
        return torch.cat([getattr(out, f) for f in self.fields], dim=-1)  # (B, F)

    def forward(self, x: Tensor) -> Tensor:
        """x: images (B, 3, H, W) or pooled features (B, F) -> logits (B, C)."""
        features = self.pooled(x) if x.ndim == 4 else x
        return self.head(features.float())

    def batch_args(self, batch: dict[str, Tensor]) -> tuple[tuple, dict[str, Any]]:
        return (batch["pooled"] if "pooled" in batch else batch["image"],), {}

    def param_count(self) -> ParamCount:
        """Trainable / total with the frozen ViT counted whether attached or not (the kNN bank is data, not
        parameters: 0 trainable)."""
        head = list(self.head.parameters())
        trainable = sum(p.numel() for p in head if p.requires_grad)
        return ParamCount(trainable, self.spec.num_params + sum(p.numel() for p in head))

    def fitted_state(self) -> dict[str, Tensor]:
        """The kNN head's buffers (the checkpoint keeps them next to the parameters); none for the linear head."""
        return {f"head.{n}": b for n, b in self.head.named_buffers()}

    def load_fitted_state(self, tensors: dict[str, Tensor]) -> None:
        self.head.load_state({n.removeprefix("head."): t for n, t in tensors.items()})


def build_probe(cfg: ProbeConfig, head: Callable[[int, int], nn.Module], device=None, source="online") -> ProbeModel:
    if source == "store":
        vit, spec = None, lpm_spec(cfg.backbone, cfg.img_size, cfg.backbone_kwargs)
    else:
        vit, spec = base_vit(cfg, device)
    if not spec.pooled_cls:
        raise ConfigError(f"{cfg.backbone} has no class token to probe (its pooled feature is not a CLS token)")
    with torch.device(device or "cpu"):
        return ProbeModel(vit, spec, cfg.fields, head(spec.embed_dim * len(cfg.fields), cfg.num_classes))


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
        labels = torch.zeros(batch_size, dtype=torch.long, device=device)
        return {"pooled": torch.randn(batch_size, model.feature_dim, device=device), "label": labels}

    def store_config(self, config: ProbeConfig) -> Any:
        """The store a probe builds when it has none: FPT+'s default for the same backbone and resolution (its
        side depth capped at the ViT's), so FPT+, both probes and their reruns share one preload."""
        from ..model import FPTConfig

        depth = lpm_spec(config.backbone, config.img_size, config.backbone_kwargs).depth
        default = FPTConfig.fpt_plus()
        return FPTConfig.fpt_plus(backbone=config.backbone, backbone_kwargs=dict(config.backbone_kwargs),
                                  weights=config.weights, img_size=config.img_size, num_classes=config.num_classes,
                                  side_depth=min(default.side_depth, depth))  # fmt: skip

    def check_store(self, store: Any, config: ProbeConfig, index: Any, resize: str) -> None:
        """Any complete store of the same backbone, weights, resolution, normalisation and resize that holds the
        pooled fields serves (its fused layers, token ratio and side size do not matter to a probe)."""
        from ..backbones import weights_identity
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


@dataclass
class ProbeFit:
    """What a fitter returns: the cross-validation, how to load the fitted head, and facts for results.json."""

    cv: CVResult
    load: Callable[[nn.Module], None]
    details: dict[str, Any]


def _linear_fitter(cfg: LinearProbeConfig, x: Tensor, y: Tensor, folds: list[int], task: Task,
                   num_classes: int) -> ProbeFit:  # fmt: skip
    """CV along `c_grid` (each fold warm-started from its previous C), then the fit on every row at the chosen C."""
    outputs = 1 if task == "binary" else num_classes

    def fold_model(x_fit: Tensor, y_fit: Tensor, x_held: Tensor, notes: list[str]):
        scaler, state = Standardizer.fit(x_fit), {"fit": None}
        fit_rows, held_rows = scaler(x_fit), scaler(x_held)

        def at(c: float) -> Tensor:
            state["fit"] = fit_logistic(fit_rows, y_fit, c, task, outputs, init=state["fit"])
            if not state["fit"].converged:
                notes.append(f"C = {c:g} did not converge in a fold (max |gradient| {state['fit'].grad_max:.1e})")
            return logistic_probs(state["fit"], held_rows, task)

        return at

    cv = cross_validate(x, y, folds, cfg.c_grid, fold_model)
    scaler = Standardizer.fit(x)
    fit = fit_logistic(scaler(x), y, cv.best, task, outputs)
    details = {"C": cv.best, "iterations": fit.iterations, "converged": fit.converged, "grad_max": fit.grad_max}
    return ProbeFit(cv, lambda head: head.load_fit(fit, scaler, task), details)


def _knn_fitter(cfg: KNNProbeConfig, x: Tensor, y: Tensor, folds: list[int], task: Task,
                num_classes: int) -> ProbeFit:  # fmt: skip
    """CV along `k_grid` (values above a fold's fit rows are left out), then the bank of every row."""
    smallest_fit = min(int((torch.as_tensor(folds) != f).sum()) for f in set(folds))
    grid = [k for k in cfg.k_grid if k <= smallest_fit] or [smallest_fit]
    targets = one_hot_targets(y, num_classes)

    def fold_model(x_fit: Tensor, y_fit: Tensor, x_held: Tensor, notes: list[str]):
        scaler = Standardizer.fit(x_fit)
        bank, held, t = scaler(x_fit), scaler(x_held), one_hot_targets(y_fit, num_classes)
        return lambda k: knn_probs(bank, t, held, int(k))

    cv = cross_validate(x, y, folds, [float(k) for k in grid], fold_model)
    scaler, k = Standardizer.fit(x), int(cv.best)
    return ProbeFit(cv, lambda head: head.load_fit(x, targets, scaler, k, task == "multilabel"),
                    {"k": k, "bank_rows": len(x)})  # fmt: skip


PROBES = PooledFeatures()
register(
    Method(
        "linear",
        "linear probing done as the field does it: L2 logistic regression to convergence on the frozen CLS ⊕ mean "
        "patch token, C chosen by cross-validation",
        LinearProbeConfig,
        LinearProbeConfig,
        lambda cfg, device=None, source="online": build_probe(cfg, LinearHead, device, source),
        inputs=PROBES,
        fitter=_linear_fitter,
    )
)
register(
    Method(
        "knn",
        "kNN probe: cosine k-nearest neighbours on the frozen CLS ⊕ mean patch token, k chosen by cross-validation",
        KNNProbeConfig,
        KNNProbeConfig,
        lambda cfg, device=None, source="online": build_probe(cfg, KNNHead, device, source),
        inputs=PROBES,
        fitter=_knn_fitter,
    )
)
