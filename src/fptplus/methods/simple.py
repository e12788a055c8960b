"""Baselines that only choose which existing parameters train: full FT, the paper's linear probing (AdamW), attention
tuning, BitFit. (The `linear` probe fitted to convergence is `probe.py`.)"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..backbones import BackboneFamily, family_of
from . import Method, register
from .baseline import BaselineConfig, build_baseline

Trainable = Callable[[str, nn.Parameter], bool]


def _register(name: str, summary: str, trainable: Callable[[BackboneFamily], Trainable], lr: float) -> None:
    def build(cfg: BaselineConfig, device=None, source: str = "online"):
        return build_baseline(cfg, trainable(family_of(cfg.backbone)), device=device)

    register(Method(name, summary, BaselineConfig, BaselineConfig, build, default_lr=lr))


_register("full_ft", "full fine-tuning: every ViT parameter trains", lambda f: lambda n, p: True, 1e-4)
_register("linear_adamw", "the paper's linear probing: a new head on the frozen CLS, AdamW on augmented online views",
          lambda f: lambda n, p: False, 1e-3)  # fmt: skip
_register("attn_tune", "attention tuning: only the attention layers' weights (and the head) train",
          lambda f: lambda n, p: f.is_attention_param(n), 1e-4)  # fmt: skip
_register("bitfit", "BitFit: only the biases (and the head) train", lambda f: lambda n, p: n.endswith(".bias"), 1e-3)
