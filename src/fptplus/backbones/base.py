"""The backbone seam: what fptplus needs from a family of ViT implementations, and the shape facts it shares.

A family (timm, Hugging Face transformers, ...) is one `BackboneFamily` subclass in one module. Everything
outside `fptplus.backbones` reaches a ViT's internals only through these methods:

    create(name, img_size, weights, device)   the ViT at that resolution, no head; model(x) -> (B, D) pooled
    spec(name, model)                         LPMSpec: tokens, heads, head dim, prefix tokens, patch, mean/std
    blocks(model), mlp(block)                 the transformer blocks (block(x) -> x, x: (B, N, D)) and MLP branch
    capture_qkv(model, layer, sink)           hooks that hand the per-head q, k, v of a block to `sink`
    forward_to(model, x, layer, pooled)       the frozen forward up to a block (the pooled features when asked)
    projections(model)                        module names of the q/k/v projections (for peft's LoRA)
    is_attention_param(name)                  which parameters are "the attention" (attention tuning)
    set_attention(model, mode)                explicit softmax ("eager") or fused SDPA, for the memory tables
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._utils import Size

AttentionMode = Literal["eager", "fused"]
# sink(what, tensor): what is "q", "k" or "v"; tensor (B, H, N, d), after any q/k normalisation.
QKVSink = Callable[[str, Tensor], None]


@dataclass(frozen=True)
class Pooled:
    """The pooled features of a ViT's last block, after its final norm (what frozen-feature probes read).

    Attributes:
        cls: (B, D) the class token.
        patch_mean: (B, D) the mean of the patch tokens (register tokens excluded): with `cls`, DINOv2's linear
            evaluation feature.
    """

    cls: Tensor
    patch_mean: Tensor


@dataclass(frozen=True)
class LPMSpec:
    """What the rest of fptplus needs to know about a ViT, available without its weights.

    Attributes:
        name: the backbone name as given (with its family prefix, e.g. "hf:/models/rad-dino").
        img_size: (H, W) input resolution it was built for.
        patch_size: (ph, pw).
        grid_size: (H / ph, W / pw) patch grid.
        num_prefix_tokens: CLS (and register) tokens before the patch tokens.
        depth: number of blocks.
        embed_dim: D.
        num_heads: H.
        num_params: parameters of the backbone (no head).
        mean: per-channel normalisation mean of its pre-processing.
        std: per-channel normalisation std.
        pooled_cls: whether its pooled feature is the final-normed CLS token (what preloading can store).
    """

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
    pooled_cls: bool = True

    @property
    def num_tokens(self) -> int:
        """N: patch tokens plus prefix (CLS/register) tokens."""
        return self.grid_size[0] * self.grid_size[1] + self.num_prefix_tokens

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


class BackboneFamily(ABC):
    """One family of ViT implementations behind the seam (see the module docstring for the contract).

    Attributes:
        prefix: how backbone names of this family start ("" for the default family, timm; "hf:" for transformers).
        summary: one line for help texts.
    """

    prefix: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def owns(self, name: str) -> bool:
        return bool(self.prefix) and name.startswith(self.prefix)

    @abstractmethod
    def create(
        self,
        name: str,
        img_size: Size,
        weights: str | os.PathLike | None,
        device: str | torch.device | None = None,
        **overrides,
    ) -> nn.Module:
        """The ViT at `img_size` without a classifier; `model(x)` gives the (B, D) pooled feature.

        Args:
            name: backbone name (with the family prefix).
            img_size: input resolution, int or (H, W), a multiple of the patch size.
            weights: None for random init (seeded, the same everywhere), "hub" for the pretrained weights the
                name refers to, or a local file (a folder for families that save folders).
            device: parameter device; "meta" with weights None builds shapes only.
            **overrides: architecture settings on top of the name's (tests shrink depth and width).
        """

    @abstractmethod
    def spec(self, name: str, model: nn.Module) -> LPMSpec:
        """The shape facts of a model this family built."""

    @abstractmethod
    def blocks(self, model: nn.Module) -> Sequence[nn.Module]:
        """The transformer blocks in order; each is called as block(x) with x (B, N, D) and returns (B, N, D)."""

    @abstractmethod
    def mlp(self, block: nn.Module) -> nn.Module:
        """The block's MLP branch: called on the normed tokens (B, N, D); its output joins the residual
        (after the block's layer scale, if any)."""

    @abstractmethod
    def capture_qkv(self, model: nn.Module, layer: int, sink: QKVSink) -> list[RemovableHandle]:
        """Forward hooks on block `layer` that call sink("q"|"k"|"v", (B, H, N, d)) once per forward each, with
        q and k after any normalisation; the model's own attention keeps running unchanged."""

    @abstractmethod
    def attention_scale(self, model: nn.Module, layer: int) -> float:
        """The softmax scale of block `layer`'s attention (usually head_dim ** -0.5)."""

    @abstractmethod
    def forward_to(self, model: nn.Module, x: Tensor, layer: int, pooled: bool) -> Pooled | None:
        """Runs x (B, 3, H, W) through the blocks up to `layer` (0-based) and stops; returns the final-normed CLS
        token and mean patch token (`Pooled`, each (B, D)) when `pooled` (then `layer` is the last block), else
        None."""

    @abstractmethod
    def projections(self, model: nn.Module) -> dict[str, str]:
        """{"q": ..., "k": ..., "v": ...}: module names of the query/key/value projections (peft targets them by
        name). A family with a fused qkv projection splits it here, in place, without changing outputs."""

    @abstractmethod
    def is_attention_param(self, name: str) -> bool:
        """Whether a parameter (named as in `model.named_parameters()`) belongs to an attention layer."""

    @abstractmethod
    def set_attention(self, model: nn.Module, mode: AttentionMode) -> Callable[[], None]:
        """Switches every attention of this family inside `model` (any module tree) to "eager" (explicit softmax
        map) or "fused" (scaled-dot-product attention); returns a function that restores the previous setting."""

    def check_weights(self, name: str, weights: str) -> None:  # noqa: B027  (optional hook)
        """Refuses a weights choice that cannot work for this family, before any data is read."""

    @abstractmethod
    def hub_identity(self, name: str) -> dict[str, str]:
        """What identifies weights="hub" for this name without loading them (recorded in store fingerprints)."""
