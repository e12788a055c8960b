"""Adapter: one bottleneck MLP per block, parallel to the block's MLP (AdaptFormer-style), frozen ViT.

    block MLP branch:  mlp(norm2(x))  →  mlp(norm2(x)) + scale · up(GELU(down(norm2(x))))

`up` starts at zero, so training starts from the pretrained function. Added with a forward hook on each
block's MLP (found through the backbone family); the ViT's modules are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..backbones import BackboneFamily
from ..errors import ConfigError
from . import Method, register
from .baseline import BaselineConfig, build_baseline


@dataclass
class AdapterConfig(BaselineConfig):
    """Bottleneck adapters.

    Attributes:
        adapter_dim: bottleneck width (None: D / 8, 96 for ViT-B as in the paper).
        adapter_scale: scale of the adapter branch.
    """

    adapter_dim: int | None = None
    adapter_scale: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapter_dim is not None and self.adapter_dim < 1:
            raise ConfigError(f"adapter_dim must be >= 1, got {self.adapter_dim}")


class Bottleneck(nn.Module):
    def __init__(self, dim: int, hidden: int, scale: float) -> None:
        super().__init__()
        self.down, self.act, self.up = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.up(self.act(self.down(x)))


class Adapters(nn.ModuleList):
    def attach(self, vit: nn.Module, family: BackboneFamily) -> None:
        for adapter, block in zip(self, family.blocks(vit), strict=True):
            family.mlp(block).register_forward_hook(lambda m, args, out, a=adapter: out + a(args[0]))


def build_adapter(cfg: AdapterConfig, device=None, source: str = "online"):
    def extend(vit, spec, family):
        hidden = cfg.adapter_dim or spec.embed_dim // 8
        with torch.device(next(vit.parameters()).device):
            adapters = Adapters(Bottleneck(spec.embed_dim, hidden, cfg.adapter_scale) for _ in range(spec.depth))
        adapters.attach(vit, family)
        return vit, adapters

    return build_baseline(cfg, lambda n, p: n.startswith("extra."), extend, device)


register(Method("adapter", "Adapter: a D/8 bottleneck per block, parallel to its MLP", AdapterConfig, AdapterConfig,
                build_adapter, default_lr=1e-3))  # fmt: skip
