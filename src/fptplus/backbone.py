"""The frozen large pre-trained model (LPM): per-layer K/V capture and important-token selection.

`FrozenLPM` wraps a timm VisionTransformer without changing it. Forward hooks on each fused block's
`attn.qkv`, `attn.q_norm` and `attn.k_norm` see the per-head queries, keys (both after any q/k
normalisation) and values while timm's own forward runs its fused attention; the hook of the last of the
three computes the token importance in query chunks and keeps only the selected K/V of that layer. The
forward stops after the deepest fused block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .errors import ConfigError
from .importance import (
    IMPORTANCE_MODES,
    ImportanceMode,
    gather_tokens,
    num_selected_tokens,
    select_top_tokens,
    token_importance,
)


@dataclass(frozen=True)
class LPMSpec:
    """What the rest of fptplus needs to know about an LPM, available without its weights."""

    name: str
    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    grid_size: tuple[int, int]
    num_prefix_tokens: int
    depth: int
    embed_dim: int
    num_heads: int
    num_params: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_tokens(self) -> int:
        """N: patch tokens plus prefix (CLS/register) tokens."""
        return self.grid_size[0] * self.grid_size[1] + self.num_prefix_tokens

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @classmethod
    def from_vit(cls, name: str, vit: VisionTransformer) -> LPMSpec:
        cfg = getattr(vit, "pretrained_cfg", {}) or {}
        return cls(
            name=name,
            img_size=tuple(vit.patch_embed.img_size),
            patch_size=tuple(vit.patch_embed.patch_size),
            grid_size=tuple(vit.patch_embed.grid_size),
            num_prefix_tokens=int(vit.num_prefix_tokens),
            depth=len(vit.blocks),
            embed_dim=int(vit.embed_dim),
            num_heads=int(vit.blocks[0].attn.num_heads),
            num_params=sum(p.numel() for p in vit.parameters()),
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        )


@dataclass
class LPMFeatures:
    """Selected keys/values of the fused LPM layers for a batch (what preloading stores).

    Attributes:
        keys: (B, L, H, k, d) keys of the selected tokens per fused layer and head.
        values: (B, L, H, k, d) values of the same tokens.
        indices: (B, L, H, k) int64 token positions in the LPM sequence (0..N-1; the first
            `num_prefix_tokens` are CLS/register tokens), best first, or in natural order when no selection.
        cls: (B, D) the LPM's final normed CLS feature when the top fused layer is the LPM's last block
            (it costs one LayerNorm then; linear probing can train on it), else None.
    """

    keys: Tensor
    values: Tensor
    indices: Tensor
    cls: Tensor | None = None

    def to(self, *args, **kwargs) -> LPMFeatures:
        cls = self.cls.to(*args, **kwargs) if self.cls is not None else None
        return LPMFeatures(self.keys.to(*args, **kwargs), self.values.to(*args, **kwargs), self.indices, cls)


def resolve_layers(layers: int | Sequence[int] | str, depth: int) -> tuple[int, ...]:
    """Fused LPM layers as sorted 0-based indices.

    Args:
        layers: an int n (the top n layers), "all", or explicit 0-based indices (negatives count from the top).
        depth: number of LPM blocks.
    """
    if isinstance(layers, str):
        if layers != "all":
            raise ConfigError(f"fused layers must be an int, a list of indices or 'all', got {layers!r}")
        return tuple(range(depth))
    if isinstance(layers, int):
        if not 0 <= layers <= depth:
            raise ConfigError(f"cannot fuse the top {layers} layers: the LPM has {depth} layers (use 0..{depth})")
        return tuple(range(depth - layers, depth))
    out = []
    for i in layers:
        if not -depth <= int(i) < depth:
            raise ConfigError(f"fused layer index {i} is out of range for an LPM with {depth} layers")
        out.append(int(i) % depth)
    if len(set(out)) != len(out):
        raise ConfigError(f"fused layer indices {list(layers)} contain duplicates")
    return tuple(sorted(out))


def provides_cls(vit: VisionTransformer, layers: Sequence[int]) -> bool:
    """Whether the forward up to the top fused layer yields the ViT's pooled feature (its normed CLS token):
    true when that layer is the last block and the ViT pools by its class token. It then costs one LayerNorm."""
    return (
        layers[-1] == len(vit.blocks) - 1 and vit.num_prefix_tokens > 0 and getattr(vit, "global_pool", "") == "token"
    )


class FrozenLPM(nn.Module):
    """A frozen timm ViT that returns the selected K/V of its fused layers.

    Args:
        vit: a timm VisionTransformer (built at the high resolution, no head). Frozen in place.
        name: its timm name (recorded in `spec`).
        layers: fused block indices (0-based) or an int n for the top n blocks.
        token_ratio: m, the fraction of tokens kept per head (1.0 keeps all, in natural order).
        importance: "mean" (mean attention received from all queries) or "cls" (CLS-row attention).
        chunk_size: query rows per importance chunk; None sizes chunks from a 16 MiB budget.
    """

    def __init__(
        self,
        vit: VisionTransformer,
        name: str,
        layers: int | Sequence[int] | str,
        token_ratio: float = 0.2,
        importance: ImportanceMode = "mean",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if importance not in IMPORTANCE_MODES:
            raise ConfigError(f"importance must be one of {IMPORTANCE_MODES}, got {importance!r}")
        self.vit = vit
        self.spec = LPMSpec.from_vit(name, vit)
        self.layers = resolve_layers(layers, self.spec.depth)
        if not self.layers:
            raise ConfigError("FrozenLPM needs at least one fused layer (0 fused layers = side network alone)")
        self.token_ratio = float(token_ratio)
        self.num_selected = num_selected_tokens(self.spec.num_tokens, self.token_ratio)
        self.importance = importance
        self.chunk_size = chunk_size
        self.vit.requires_grad_(False)
        self.vit.eval()
        self._capturing = False
        self._stash: dict[int, dict[str, Tensor]] = {}
        self._selected: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        for layer in self.layers:
            attn = self.vit.blocks[layer].attn
            attn.qkv.register_forward_hook(self._hook(layer, "qkv"))
            attn.q_norm.register_forward_hook(self._hook(layer, "q"))
            attn.k_norm.register_forward_hook(self._hook(layer, "k"))

    def train(self, mode: bool = True) -> FrozenLPM:
        """The LPM stays in eval mode whatever its parent does (no dropout, fixed features)."""
        return super().train(False)

    def _hook(self, layer: int, what: str):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            if not self._capturing:
                return
            stash = self._stash.setdefault(layer, {})
            if what == "qkv":
                attn = self.vit.blocks[layer].attn
                B, N, _ = out.shape
                qkv = out.reshape(B, N, 3, attn.num_heads, attn.head_dim)  # (B, N, 3, H, d)
                stash["v"] = qkv[:, :, 2].transpose(1, 2)  # (B, H, N, d)
            else:
                stash[what] = out  # (B, H, N, d), after q_norm / k_norm
            if len(stash) == 3:
                self._select(layer, self._stash.pop(layer))

        return hook

    def _select(self, layer: int, qkv: dict[str, Tensor]) -> None:
        q, k, v = qkv["q"], qkv["k"], qkv["v"]  # (B, H, N, d) each
        B, H, N, _ = k.shape
        if self.num_selected == N:  # ratio 1.0: no selection, natural order
            idx = torch.arange(N, device=k.device).expand(B, H, N)  # (B, H, N)
            self._selected[layer] = (k.detach().clone(), v.detach().clone(), idx)
            return
        scores = token_importance(
            q, k, scale=self.vit.blocks[layer].attn.scale, mode=self.importance, chunk_size=self.chunk_size
        )  # (B, H, N)
        idx = select_top_tokens(scores, self.num_selected)  # (B, H, k)
        self._selected[layer] = (gather_tokens(k, idx), gather_tokens(v, idx), idx)  # (B, H, k, d) x2

    def check_input(self, x: Tensor) -> None:
        """Refuses inputs whose shape is not the resolution the LPM was built for."""
        H, W = self.spec.img_size
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (H, W):
            raise ConfigError(
                f"LPM {self.spec.name} was built for (B, 3, {H}, {W}) inputs, got {tuple(x.shape)}; resize the "
                f"high-resolution view to {H}x{W} or rebuild the LPM at the new size."
            )

    @torch.no_grad()
    def forward(self, x: Tensor) -> LPMFeatures:
        """x: (B, 3, H, W) normalised high-resolution images -> LPMFeatures with (B, L, H, k, d) K/V."""
        self.check_input(x)
        self._stash.clear()
        self._selected.clear()
        self._capturing = True
        last = provides_cls(self.vit, self.layers)
        try:
            out = self.vit.forward_intermediates(
                x,
                indices=[self.layers[-1]],
                stop_early=True,
                intermediates_only=True,
                output_fmt="NLC",
                norm=last,
                return_prefix_tokens=last,
            )
        finally:
            self._capturing = False
            self._stash.clear()
        selected = [self._selected.pop(layer) for layer in self.layers]
        keys = torch.stack([s[0] for s in selected], dim=1)  # (B, L, H, k, d)
        values = torch.stack([s[1] for s in selected], dim=1)  # (B, L, H, k, d)
        indices = torch.stack([s[2] for s in selected], dim=1)  # (B, L, H, k)
        cls = out[0][1][:, 0] if last else None  # (B, D): the final norm's CLS token
        return LPMFeatures(keys, values, indices, cls)
