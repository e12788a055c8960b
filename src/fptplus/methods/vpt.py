"""VPT-deep (Jia et al., 2022): P learnable prompt tokens inserted after the prefix tokens at every block.

Prompts of block l enter before it and are dropped after it (the next block gets its own); the ViT's blocks stay
untouched, the insertion is a forward pre-hook / hook pair, so the frozen weights keep their names.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..backbones import BackboneFamily, LPMSpec
from .baseline import build_baseline
from .configs import VPTConfig


class DeepPrompts(nn.Module):
    """(depth, P, D) prompts; `attach(vit)` hooks them into every block."""

    def __init__(self, depth: int, num_prompts: int, dim: int, patch: tuple[int, int], dropout: float) -> None:
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(depth, num_prompts, dim))  # (L, P, D)
        bound = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + dim))  # VPT's xavier-uniform bound
        nn.init.uniform_(self.prompts, -bound, bound)
        self.dropout = nn.Dropout(dropout)
        self.num_prefix = 1

    def attach(self, vit: nn.Module, spec: LPMSpec, family: BackboneFamily) -> None:
        self.num_prefix = spec.num_prefix_tokens
        for i, block in enumerate(family.blocks(vit)):
            block.register_forward_pre_hook(self._insert(i))
            block.register_forward_hook(self._remove)

    def _insert(self, i: int):
        def hook(module: nn.Module, args: tuple) -> tuple:
            x = args[0]  # (B, N, D)
            p = self.dropout(self.prompts[i]).to(x.dtype).expand(x.shape[0], -1, -1)  # (B, P, D)
            n = self.num_prefix
            return (torch.cat([x[:, :n], p, x[:, n:]], dim=1), *args[1:])  # (B, N + P, D)

        return hook

    def _remove(self, module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        n, P = self.num_prefix, self.prompts.shape[1]
        return torch.cat([out[:, :n], out[:, n + P :]], dim=1)  # (B, N, D)


def build_vpt(cfg: VPTConfig, device=None, source: str = "online"):
    def extend(vit, spec, family):
        with torch.device(next(vit.parameters()).device):
            prompts = DeepPrompts(spec.depth, cfg.vpt_prompts, spec.embed_dim, spec.patch_size, cfg.vpt_dropout)
        prompts.attach(vit, spec, family)
        return vit, prompts

    return build_baseline(cfg, lambda n, p: n.startswith("extra."), extend, device)
