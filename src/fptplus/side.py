"""The learnable side network: a small timm VisionTransformer that takes fused prompts between layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ._utils import Size, check_multiple_of_patch, to_hw
from .errors import ConfigError


class SideViT(nn.Module):
    """A randomly initialised ViT of width D/k built from timm's own VisionTransformer/Blocks.

    Before block l the P fused prompts of that layer (if any) are appended to the token sequence; after the
    block they are dropped again, so every block sees N_side + P tokens and the sequence length stays fixed.
    The class token goes through the final norm and a linear head.

    Args:
        img_size: side input resolution (the down-sampled view), int or (H, W).
        patch_size: patch size (the LPM's).
        embed_dim: width, D // reduction.
        depth: number of blocks L_S.
        num_heads: attention heads (the LPM's).
        num_classes: classifier outputs.
        mlp_ratio: MLP hidden ratio.
    """

    def __init__(
        self,
        img_size: Size,
        patch_size: int | tuple[int, int],
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_classes: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        hw = to_hw(img_size, "side input size")
        patch = to_hw(patch_size, "patch size")
        check_multiple_of_patch(hw, patch, "side input size")
        if depth < 1:
            raise ConfigError(f"side network depth must be >= 1, got {depth}")
        if embed_dim % num_heads:
            raise ConfigError(
                f"side width {embed_dim} is not divisible by the {num_heads} heads it inherits from the LPM; "
                "choose a reduction factor k such that D/k is a multiple of the LPM's head count"
            )
        self.vit = VisionTransformer(
            img_size=hw,
            patch_size=patch,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            num_classes=num_classes,
            global_pool="token",
            class_token=True,
        )

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def img_size(self) -> tuple[int, int]:
        """(h, w) input resolution."""
        return tuple(self.vit.patch_embed.img_size)

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    def forward_features(self, x: Tensor, prompts: Sequence[Tensor | None] | None = None) -> Tensor:
        """x: (B, 3, h, w); prompts: one (B, P, D_s) tensor or None per block -> normed tokens (B, N_s, D_s)."""
        prompts = [None] * self.depth if prompts is None else list(prompts)
        if len(prompts) != self.depth:
            raise ConfigError(f"side network has {self.depth} blocks but got prompts for {len(prompts)}")
        H, W = self.vit.patch_embed.img_size
        if x.ndim != 4 or tuple(x.shape[-2:]) != (H, W):
            raise ConfigError(f"side network expects (B, 3, {H}, {W}) inputs, got {tuple(x.shape)}")
        x = self.vit.patch_embed(x)  # (B, N_s - 1, D_s)
        x = self.vit._pos_embed(x)  # (B, N_s, D_s), CLS first
        x = self.vit.patch_drop(x)
        x = self.vit.norm_pre(x)
        for block, p in zip(self.vit.blocks, prompts, strict=True):
            if p is None:
                x = block(x)
            else:
                n = x.shape[1]
                x = block(torch.cat([x, p.to(x.dtype)], dim=1))[:, :n]  # (B, N_s + P, D_s) -> (B, N_s, D_s)
        return self.vit.norm(x)

    def forward(self, x: Tensor, prompts: Sequence[Tensor | None] | None = None) -> Tensor:
        """Logits (B, num_classes)."""
        return self.vit.forward_head(self.forward_features(x, prompts))
