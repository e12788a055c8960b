"""Adapter: one bottleneck MLP per block, parallel to the block's MLP (AdaptFormer-style), frozen ViT.

    block MLP branch:  mlp(norm2(x))  →  mlp(norm2(x)) + scale · up(GELU(down(norm2(x))))

`up` starts at zero, so training starts from the pretrained function. Added with a forward hook on each
block's MLP (found through the backbone family); the ViT's modules are untouched.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backbones import BackboneFamily
from .baseline import build_baseline
from .configs import AdapterConfig


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
