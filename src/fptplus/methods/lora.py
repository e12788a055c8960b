"""LoRA and AdaLoRA (Hugging Face peft) on the query and value projections of the ViT.

The backbone family names the projections (`BackboneFamily.projections`): timm fuses q, k, v into one `qkv`
Linear, which the timm family splits into three Linears sharing its storage (no copy, identical outputs), so
peft targets the query and value projections by name as the paper does.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from ..errors import ConfigError
from .baseline import build_baseline
from .configs import AdaLoraMethodConfig, LoraMethodConfig


def build_lora(cfg: LoraMethodConfig, device=None, source: str = "online"):
    from peft import LoraConfig, inject_adapter_in_model

    def extend(vit, spec, family):
        names = family.projections(vit)
        peft_cfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=[names[t] for t in cfg.lora_targets])  # fmt: skip
        return inject_adapter_in_model(peft_cfg, vit), None

    return build_baseline(cfg, lambda n, p: ".lora_" in n, extend, device)


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
