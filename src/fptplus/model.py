"""FPT+ and FPT as one model: frozen LPM → selected K/V → fusion modules → side ViT → logits.

Data flow and shapes (ViT-B/16, 512 px LPM, 128 px side, defaults):

    lpm_x (B, 3, 512, 512) ─ FrozenLPM ─► K̂, V̂ (B, L=6, H=12, k=205, d=64)   [or read from the feature store]
    fusion(K̂, V̂) ─► prompts (B, L, P=16, D_s=96)
    side_x (B, 3, 128, 128) ─ SideViT (6 blocks; block j gets the prompts of fused layer j) ─► logits (B, C)

Side block j is fused with LPM layer fused_layers[j - (L_S - L)], i.e. the top L side blocks with the fused
LPM layers in order (paper eq. 5: l' = L_M − L_S + l when every side block is fused).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from .backbones import LPMSpec, lpm_spec
from .errors import ConfigError
from .fusion import FineGrainedFusion, FusionOutput
from .importance import num_selected_tokens
from .lpm import FrozenLPM, LPMFeatures, resolve_layers
from .model_config import FPTConfig, FusedLayers
from .params import ParamCount, count_parameters
from .side import SideViT

__all__ = ["FPTConfig", "FPTModel", "FusedLayers", "FusionPlan", "build_fpt"]


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
