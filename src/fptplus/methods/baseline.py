"""The shared shape of every Table-1 baseline: a ViT read at the chosen resolution + a new linear head.

Each baseline module declares which parameters train (and adds its own, e.g. prompts or adapters) around the
backbone family's unchanged modules (reached through `fptplus.backbones`); `BaselineModel` is the one interface
the trainer sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..backbones import BackboneFamily, LPMSpec, create_backbone, family_of
from ..params import ParamCount, count_parameters
from .configs import BaselineConfig


class BaselineModel(nn.Module):
    """`head(vit(x))`: the ViT's pooled (CLS, normed) features through a new linear classifier.

    Attributes:
        vit: the ViT (possibly wrapped by peft), shared frozen weights untouched unless the method tunes them.
        head: Linear(D, num_classes), always trained.
        extra: the method's own new modules (prompts, adapters), if any.
        spec: shape facts of the ViT (normalisation, patch size) for the data views.
    """

    def __init__(self, vit: nn.Module, spec: LPMSpec, num_classes: int, extra: nn.Module | None = None) -> None:
        super().__init__()
        self.vit, self.spec = vit, spec
        self.extra = extra if extra is not None else nn.Identity()
        self.head = nn.Linear(spec.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) normalised images -> logits (B, C)."""
        return self.head(self.vit(x))

    def batch_args(self, batch: dict[str, Tensor]) -> tuple[tuple, dict[str, Any]]:
        return (batch["image"],), {}

    def param_count(self) -> ParamCount:
        return count_parameters(self)


def base_vit(cfg: BaselineConfig, device: str | torch.device | None) -> tuple[nn.Module, LPMSpec]:
    vit = create_backbone(cfg.backbone, cfg.img_size, cfg.weights, device, **cfg.backbone_kwargs)
    return vit, family_of(cfg.backbone).spec(cfg.backbone, vit)


def freeze_except(model: nn.Module, trainable: Callable[[str, nn.Parameter], bool]) -> None:
    """The one place parameters are frozen: everything except what `trainable(name, param)` accepts."""
    for name, p in model.named_parameters():
        p.requires_grad_(bool(trainable(name, p)))


def build_baseline(
    cfg: BaselineConfig,
    trainable: Callable[[str, nn.Parameter], bool],
    extend: Callable[[nn.Module, LPMSpec, BackboneFamily], tuple[nn.Module, nn.Module | None]] | None = None,
    device: str | torch.device | None = None,
) -> BaselineModel:
    """ViT from `cfg`, optionally extended (adapters, prompts, peft), new head, then the freeze.

    Args:
        cfg: the baseline config.
        trainable: (name, param) -> trains? Names are those of `BaselineModel` ("vit.…", "extra.…", "head.…");
            the head always trains.
        extend: (vit, spec, family) -> (vit or its wrapper, extra module or None); `family` reaches the ViT's
            blocks, MLPs and projections.
        device: parameter device ("meta" for shape-only accounting).
    """
    vit, spec = base_vit(cfg, device)
    extra = None
    if extend is not None:
        vit, extra = extend(vit, spec, family_of(cfg.backbone))
    with torch.device(device or "cpu"):
        model = BaselineModel(vit, spec, cfg.num_classes, extra)
    freeze_except(model, lambda n, p: n.startswith("head.") or trainable(n, p))
    return model
