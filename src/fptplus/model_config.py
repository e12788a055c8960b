"""FPT/FPT+'s typed config, a plain dataclass importable without torch: the model (`fptplus.model`), the frozen LPM,
the feature store's fingerprint and the command line's flags all read it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ._utils import Size, to_hw
from .errors import ConfigError
from .selection import selector_names

FusedLayers = int | tuple[int, ...] | Literal["all"] | None
# How the importance's mean mode is computed (`fptplus.importance`): "fused" shares the layer's own fused attention
# pass and adds one swapped-role pass; "chunked" adds query-chunked matmuls; "dense" materialises each fused layer's
# attention map once and reads both the layer's output and the importance from it (no extra pass, O(B·H·N²) memory:
# what the exported CPU engines run); "auto" = fused on CUDA, chunked on CPU (equal cost there, measured).
ImportanceKernel = Literal["auto", "fused", "chunked", "dense"]
IMPORTANCE_KERNELS: tuple[str, ...] = ("auto", "fused", "chunked", "dense")


@dataclass
class FPTConfig:
    """Everything that defines an FPT/FPT+ model. Defaults are FPT+ as in the paper (§4.2.1).

    Attributes:
        backbone: the LPM: a timm model name, or hf:<folder or Hub id> for a transformers ViTModel/Dinov2Model.
        backbone_kwargs: architecture overrides for the LPM (timm kwargs, or transformers config fields for hf:),
            e.g. {"depth": 2, "embed_dim": 32} for a tiny timm test ViT.
        weights: LPM weights: a local .safetensors / weights-only torch file, "builtin:dinov2_vits14" (real
            DINOv2 ViT-S/14, offline), "hub" (timm's pretrained weights), or "none" (random init, tests only).
            The command line requires it; in Python, None means random init.
        img_size: LPM (high) input resolution, int or (H, W), a multiple of the patch size.
        side_img_size: side network (low) input resolution; None = the multiple of the patch size nearest to
            img_size / 4 (the paper's 512 -> 128; 518 -> 126 for patch 14).
        side_depth: L_S, side blocks; None = as many as fused layers (FPT).
        fused_layers: LPM layers to fuse: None = the top `side_depth`, an int n = the top n (0 = side network
            alone), explicit 0-based indices, or "all".
        reduction: k, side width = D / k.
        num_prompts: P, fine-grained prompts per fused layer.
        prompt_width: "lpm" (D, FPT+) or "side" (D/k with an in-projector, FPT).
        prompt_norm: LayerNorm on prompts before cross-attention (FPT+).
        prompt_init_std: prompts ~ N(0, std²).
        fusion_dropout: dropout on fused prompts.
        token_ratio: m, fraction of LPM tokens kept per head (1.0 = no selection).
        importance: the token selector (`fptplus.selection`): "mean" (mean attention received: the paper), "cls"
            (CLS-row attention), "random" (a fixed seeded ranking: ablation) or "all" (every token, token_ratio 1).
        importance_chunk: query rows per chunk of the importance computation (None = from a 16 MiB budget).
        importance_kernel: "auto" (fused attention kernels on CUDA, chunked matmuls on CPU, where both cost the
            same), "fused", "chunked" or "dense" (the fused layers' attention maps materialised: no extra pass,
            B·H·N² floats per layer); all exact (see fptplus.lpm).
        num_classes: classifier outputs.
        mlp_ratio: side MLP ratio.
    """

    backbone: str = "vit_base_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    img_size: Size = 512
    side_img_size: Size | None = None
    side_depth: int | None = 6
    fused_layers: FusedLayers = None
    reduction: int = 8
    num_prompts: int = 16
    prompt_width: Literal["lpm", "side"] = "lpm"
    prompt_norm: bool = True
    prompt_init_std: float = 1e-6
    fusion_dropout: float = 0.5
    token_ratio: float = 0.2
    importance: Literal["mean", "cls", "random", "all"] = "mean"
    importance_chunk: int | None = None
    importance_kernel: ImportanceKernel = "auto"
    num_classes: int = 2
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if isinstance(self.img_size, list):
            self.img_size = tuple(self.img_size)
        if isinstance(self.side_img_size, list):
            self.side_img_size = tuple(self.side_img_size)
        if isinstance(self.fused_layers, list):
            self.fused_layers = tuple(self.fused_layers)
        to_hw(self.img_size, "img_size")
        if self.side_img_size is not None:
            to_hw(self.side_img_size, "side_img_size")
        checks = [
            (0.0 < self.token_ratio <= 1.0, f"token_ratio must be in (0, 1], got {self.token_ratio}"),
            (self.importance in selector_names(), f"importance must be one of {selector_names()}"),
            (self.importance != "all" or self.token_ratio == 1.0, "importance 'all' keeps every token: token_ratio 1"),
            (
                self.prompt_width in ("lpm", "side"),
                f"prompt_width must be 'lpm' or 'side', got {self.prompt_width!r}",
            ),
            (self.num_prompts >= 1, f"num_prompts must be >= 1, got {self.num_prompts}"),
            (self.reduction >= 1, f"reduction must be >= 1, got {self.reduction}"),
            (
                0.0 <= self.fusion_dropout < 1.0,
                f"fusion_dropout must be in [0, 1), got {self.fusion_dropout}",
            ),
            (self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}"),
            (
                self.side_depth is None or self.side_depth >= 1,
                f"side_depth must be >= 1, got {self.side_depth}",
            ),
            (self.importance_chunk is None or self.importance_chunk >= 1, "importance_chunk must be >= 1"),
            (
                self.importance_kernel in IMPORTANCE_KERNELS,
                f"importance_kernel must be one of {IMPORTANCE_KERNELS}, got {self.importance_kernel!r}",
            ),
            (
                self.side_depth is not None or self.fused_layers not in (None, 0),
                "side_depth=None (as many side blocks as fused layers) needs fused layers",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def fpt_plus(cls, **overrides: Any) -> FPTConfig:
        """FPT+ (paper defaults)."""
        return cls(**overrides)

    @classmethod
    def fpt(cls, **overrides: Any) -> FPTConfig:
        """FPT: every LPM layer fused, side depth = LPM depth, D/k prompts + in-projector, no LN, 224 px side."""
        base = dict(side_depth=None, fused_layers="all", prompt_width="side", prompt_norm=False, side_img_size=224)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def side_size(self, patch: tuple[int, int]) -> tuple[int, int]:
        """The side network's input size: as configured, or the patch multiple nearest to img_size / 4."""
        if self.side_img_size is not None:
            return to_hw(self.side_img_size, "side_img_size")
        return tuple(max(p, round(s / 4 / p) * p) for s, p in zip(to_hw(self.img_size), patch, strict=True))
