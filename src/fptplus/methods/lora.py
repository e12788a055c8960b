"""LoRA and AdaLoRA (Hugging Face peft) on the query and value projections of the ViT.

The backbone family names the projections (`BackboneFamily.projections`): timm fuses q, k, v into one `qkv`
Linear, which the timm family splits into three Linears sharing its storage (no copy, identical outputs), so
peft targets the query and value projections by name as the paper does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import ConfigError
from . import Method, register
from .baseline import BaselineConfig, build_baseline


@dataclass
class LoraMethodConfig(BaselineConfig):
    """LoRA on q and v (paper: r = 16, α = 16).

    Attributes:
        lora_r: rank.
        lora_alpha: scaling α (the update is scaled by α / r).
        lora_dropout: dropout on the LoRA input.
        lora_targets: projections to adapt, among "q", "k", "v".
    """

    lora_r: int = 16
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lora_targets = tuple(self.lora_targets)
        if self.lora_r < 1 or not set(self.lora_targets) <= {"q", "k", "v"} or not self.lora_targets:
            raise ConfigError(f"lora_r must be >= 1 and lora_targets a non-empty subset of q/k/v, got {self}")


def build_lora(cfg: LoraMethodConfig, device=None, source: str = "online"):
    from peft import LoraConfig, inject_adapter_in_model

    def extend(vit, spec, family):
        names = family.projections(vit)
        peft_cfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=[names[t] for t in cfg.lora_targets])  # fmt: skip
        return inject_adapter_in_model(peft_cfg, vit), None

    return build_baseline(cfg, lambda n, p: ".lora_" in n, extend, device)


@dataclass
class AdaLoraMethodConfig(BaselineConfig):
    """AdaLoRA on q and v: ranks start at `adalora_init_r` and are pruned to an average `adalora_target_r`.

    Attributes:
        adalora_init_r: initial rank per projection (paper's 0.52 %: 12).
        adalora_target_r: average rank after budget allocation.
        adalora_alpha: scaling α.
        adalora_tinit: steps of warm-up before pruning starts.
        adalora_tfinal: final steps with the budget fixed.
        adalora_delta_t: steps between budget allocations.
        total_step: total optimizer steps (set by the trainer; required).
        lora_targets: projections to adapt, among "q", "k", "v".
    """

    adalora_init_r: int = 12
    adalora_target_r: int = 8
    adalora_alpha: float = 16
    adalora_tinit: int = 0
    adalora_tfinal: int = 0
    adalora_delta_t: int = 1
    total_step: int | None = None
    lora_targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lora_targets = tuple(self.lora_targets)
        if not 1 <= self.adalora_target_r <= self.adalora_init_r:
            raise ConfigError(f"need 1 <= adalora_target_r <= adalora_init_r, got {self.adalora_target_r}, "
                              f"{self.adalora_init_r}")  # fmt: skip


class AdaLoraViT(nn.Module):
    """peft's AdaLoraModel around the ViT (the method's `after_step` runs its budget allocation)."""

    def __init__(self, tuner: nn.Module) -> None:
        super().__init__()
        self.tuner = tuner

    def forward(self, x: Tensor) -> Tensor:
        return self.tuner(x)


def build_adalora(cfg: AdaLoraMethodConfig, device=None, source: str = "online"):
    from peft import AdaLoraConfig
    from peft.tuners.adalora import AdaLoraModel

    total = cfg.total_step if cfg.total_step is not None else 1000  # accounting only; the trainer sets it
    if total <= cfg.adalora_tinit + cfg.adalora_tfinal:
        raise ConfigError(f"AdaLoRA needs total_step ({total}) > adalora_tinit + adalora_tfinal")

    def extend(vit, spec, family):
        names = family.projections(vit)
        peft_cfg = AdaLoraConfig(init_r=cfg.adalora_init_r, target_r=cfg.adalora_target_r, lora_alpha=cfg.adalora_alpha,
                                 tinit=cfg.adalora_tinit, tfinal=cfg.adalora_tfinal, deltaT=cfg.adalora_delta_t,
                                 total_step=total, target_modules=[names[t] for t in cfg.lora_targets])  # fmt: skip
        return AdaLoraViT(AdaLoraModel(vit, peft_cfg, "default")), None

    return build_baseline(cfg, lambda n, p: ".lora_" in n, extend, device)


def adalora_schedule(cfg: AdaLoraMethodConfig, total_steps: int) -> AdaLoraMethodConfig:
    """AdaLoRA's budget schedule follows the trainer's step count (unless the config fixes it)."""
    return cfg if cfg.total_step is not None else dataclasses.replace(cfg, total_step=total_steps)


def adalora_allocate(model: nn.Module, step: int) -> None:
    """peft's rank re-allocation, after every optimizer step."""
    model.vit.tuner.update_and_allocate(step)


register(Method("lora", "LoRA (peft): r = 16, α = 16 on the query and value projections", LoraMethodConfig,
                LoraMethodConfig, build_lora, default_lr=1e-3))  # fmt: skip
register(Method("adalora", "AdaLoRA (peft): rank 12 → 8 budget on the query and value projections",
                AdaLoraMethodConfig, AdaLoraMethodConfig, build_adalora, default_lr=1e-3, prepare=adalora_schedule,
                after_step=adalora_allocate))  # fmt: skip
