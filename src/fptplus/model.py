"""FPT+ and FPT as one model: frozen LPM → selected K/V → fusion modules → side ViT → logits.

Data flow and shapes (ViT-B/16, 512 px LPM, 128 px side, defaults):

    lpm_x (B, 3, 512, 512) ─ FrozenLPM ─► K̂, V̂ (B, L=6, H=12, k=205, d=64)   [or read from the feature store]
    fusion(K̂, V̂) ─► prompts (B, L, P=16, D_s=96)
    side_x (B, 3, 128, 128) ─ SideViT (6 blocks; block j gets the prompts of fused layer j) ─► logits (B, C)

Side block j is fused with LPM layer fused_layers[j - (L_S - L)], i.e. the top L side blocks with the fused
LPM layers in order (paper eq. 5: l' = L_M − L_S + l when every side block is fused).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._utils import Size, to_hw
from .backbones import LPMSpec, lpm_spec
from .errors import ConfigError
from .fusion import FineGrainedFusion, FusionOutput
from .importance import IMPORTANCE_KERNELS, ImportanceKernel, num_selected_tokens
from .lpm import FrozenLPM, LPMFeatures, resolve_layers
from .params import ParamCount, count_parameters
from .selection import selector_names
from .side import SideViT

FusedLayers = int | tuple[int, ...] | Literal["all"] | None


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
            same), "fused" or "chunked"; all exact (see fptplus.lpm).
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


@dataclass(frozen=True)
class FusionPlan:
    """Which LPM layer feeds which side block."""

    lpm_layers: tuple[int, ...]  # fused LPM blocks, ascending
    side_depth: int
    side_blocks: tuple[int, ...] = field(default=())  # side blocks that receive prompts, same order

    @classmethod
    def resolve(cls, cfg: FPTConfig, lpm_depth: int) -> FusionPlan:
        requested = cfg.fused_layers if cfg.fused_layers is not None else cfg.side_depth
        if isinstance(requested, int) and requested > lpm_depth:
            raise ConfigError(
                f"cannot fuse {requested} layers: the LPM {cfg.backbone} has only {lpm_depth} layers "
                f"(lower side_depth/fused_layers to <= {lpm_depth})"
            )
        layers = resolve_layers(requested, lpm_depth)
        side_depth = cfg.side_depth if cfg.side_depth is not None else len(layers)
        if len(layers) > side_depth:
            raise ConfigError(
                f"{len(layers)} fused LPM layers need at least as many side blocks, but side_depth={side_depth}"
            )
        return cls(layers, side_depth, tuple(range(side_depth - len(layers), side_depth)))


class FPTModel(nn.Module):
    """FPT+/FPT: trainable side network + fusion modules, reading a frozen LPM's selected K/V.

    The LPM is attached only when the model must run online (from images); training from the feature store
    needs only `spec` (its shape facts), so the LPM's weights need not be in memory.
    """

    def __init__(
        self,
        config: FPTConfig,
        spec: LPMSpec,
        plan: FusionPlan,
        side: SideViT,
        fusion: FineGrainedFusion | None,
        lpm: FrozenLPM | None = None,
    ) -> None:
        super().__init__()
        self.config, self.spec, self.plan = config, spec, plan
        self.side, self.fusion, self.lpm = side, fusion, lpm

    @property
    def uses_lpm(self) -> bool:
        return bool(self.plan.lpm_layers)

    def param_count(self) -> ParamCount:
        """Trainable / total with total = LPM (attached or not) + side + fusion, as in the paper."""
        trainable = count_parameters(self.side).trainable
        trainable += count_parameters(self.fusion).trainable if self.fusion is not None else 0
        own = count_parameters(self.side).total + (count_parameters(self.fusion).total if self.fusion else 0)
        return ParamCount(trainable, own + (self.spec.num_params if self.uses_lpm else 0))

    def extract(self, lpm_x: Tensor) -> LPMFeatures:
        """Selected K/V of the fused layers for normalised high-resolution images (B, 3, H, W)."""
        if self.lpm is None:
            raise ConfigError(
                "this model was built without its LPM (build_fpt(..., with_lpm=False)); pass pre-extracted "
                "features= or rebuild with with_lpm=True to run from images"
            )
        return self.lpm(lpm_x)

    def forward_details(
        self,
        side_x: Tensor,
        lpm_x: Tensor | None = None,
        features: LPMFeatures | None = None,
        return_attn: bool = False,
    ) -> dict[str, Any]:
        """Logits plus the named intermediates (features, fused prompts, cross-attention when asked)."""
        slots: list[Tensor | None] = [None] * self.plan.side_depth
        fused: FusionOutput | None = None
        if self.uses_lpm:
            if features is None:
                if lpm_x is None:
                    raise ConfigError("FPT needs the high-resolution view (lpm_x) or pre-extracted features")
                features = self.extract(lpm_x)
            fused = self.fusion(features.keys, features.values, return_attn, features.key_scale, features.value_scale)
            for j, block in enumerate(self.plan.side_blocks):
                slots[block] = fused.prompts[:, j]  # (B, P, D_s)
        logits = self.side(side_x, slots)  # (B, C)
        return {"logits": logits, "features": features, "fusion": fused}

    def batch_args(self, batch: dict[str, Tensor]) -> tuple[tuple, dict[str, Any]]:
        """(args, kwargs) of `self(...)` for a data batch: {side, keys, values} (store) or {side, lpm} (online).

        The trainer calls `model(*args, **kwargs)` through any DDP wrapper, so gradients are synchronised.
        """
        if "keys" in batch:
            feats = LPMFeatures.from_batch(batch)
            return (batch["side"],), {"features": feats}
        return (batch["side"],), {"lpm_x": batch.get("lpm")}

    def forward(self, side_x: Tensor, lpm_x: Tensor | None = None, features: LPMFeatures | None = None) -> Tensor:
        """side_x: (B, 3, h, w) low-res view; lpm_x: (B, 3, H, W) high-res view or `features` -> (B, C)."""
        return self.forward_details(side_x, lpm_x, features)["logits"]


def build_fpt(
    cfg: FPTConfig, with_lpm: bool = True, device: str | torch.device | None = None, **lpm_overrides: Any
) -> FPTModel:
    """Builds an FPT/FPT+ model.

    Args:
        cfg: the model config.
        with_lpm: attach the frozen LPM (with cfg.weights) so the model runs from images; False builds only
            the trainable part (for training from the feature store, or parameter accounting).
        device: device for all parameters ("meta" for shape-only accounting).
        **lpm_overrides: architecture overrides for the LPM on top of cfg.backbone_kwargs.
    """
    if lpm_overrides:
        cfg = replace(cfg, backbone_kwargs={**cfg.backbone_kwargs, **lpm_overrides})
    spec = lpm_spec(cfg.backbone, cfg.img_size, cfg.backbone_kwargs)
    plan = FusionPlan.resolve(cfg, spec.depth)
    num_selected_tokens(spec.num_tokens, cfg.token_ratio)  # refuses ratios that keep no token
    side_dim = spec.embed_dim // cfg.reduction
    if side_dim * cfg.reduction != spec.embed_dim:
        raise ConfigError(f"LPM width {spec.embed_dim} is not divisible by reduction {cfg.reduction}")
    with torch.device(device or "cpu"):
        side = SideViT(
            cfg.side_size(spec.patch_size),
            spec.patch_size,
            side_dim,
            plan.side_depth,
            spec.num_heads,
            cfg.num_classes,
            cfg.mlp_ratio,
        )
        fusion = None
        if plan.lpm_layers:
            fusion = FineGrainedFusion(
                num_layers=len(plan.lpm_layers),
                lpm_dim=spec.embed_dim,
                num_heads=spec.num_heads,
                side_dim=side_dim,
                num_prompts=cfg.num_prompts,
                prompt_dim=spec.embed_dim if cfg.prompt_width == "lpm" else side_dim,
                prompt_norm=cfg.prompt_norm,
                dropout=cfg.fusion_dropout,
                init_std=cfg.prompt_init_std,
            )
    lpm = None
    if with_lpm and plan.lpm_layers:
        lpm = FrozenLPM.from_config(cfg, plan.lpm_layers, device)
    return FPTModel(cfg, spec, plan, side, fusion, lpm)
