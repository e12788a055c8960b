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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..backbones import LPMSpec, family_of, lpm_spec
from ..errors import ConfigError
from ..params import ParamCount
from .baseline import base_vit
from .configs import KNNProbeConfig, LinearProbeConfig, ProbeConfig
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

EPS = 1e-6  # kNN vote shares become logits through log(max(p, EPS)) (softmax gives p back to ~C·EPS)


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


@dataclass
class ProbeFit:
    """What a fitter returns: the cross-validation, how to load the fitted head, and facts for results.json."""

    cv: CVResult
    load: Callable[[nn.Module], None]
    details: dict[str, Any]


def linear_fitter(cfg: LinearProbeConfig, x: Tensor, y: Tensor, folds: list[int], task: Task,
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


def knn_fitter(cfg: KNNProbeConfig, x: Tensor, y: Tensor, folds: list[int], task: Task,
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


def build_linear(cfg: LinearProbeConfig, device=None, source: str = "online") -> ProbeModel:
    return build_probe(cfg, LinearHead, device, source)


def build_knn(cfg: KNNProbeConfig, device=None, source: str = "online") -> ProbeModel:
    return build_probe(cfg, KNNHead, device, source)
