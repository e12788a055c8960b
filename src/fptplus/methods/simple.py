"""Baselines that only choose which existing parameters train: full FT, the paper's linear probing (AdamW), attention
tuning, BitFit. (The `linear` probe fitted to convergence is `probe.py`.)"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..backbones import BackboneFamily, family_of
from .baseline import BaselineModel, build_baseline
from .configs import BaselineConfig

Trainable = Callable[[str, nn.Parameter], bool]

# method name -> which of the ViT's parameters train (the head always does)
RULES: dict[str, Callable[[BackboneFamily], Trainable]] = {
    "full_ft": lambda f: lambda n, p: True,
    "linear_adamw": lambda f: lambda n, p: False,
    "attn_tune": lambda f: lambda n, p: f.is_attention_param(n),
    "bitfit": lambda f: lambda n, p: n.endswith(".bias"),
}


def build_simple(cfg: BaselineConfig, device=None, source: str = "online", *, rule: str) -> BaselineModel:
    return build_baseline(cfg, RULES[rule](family_of(cfg.backbone)), device=device)
