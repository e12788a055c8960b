"""Baselines that only choose which existing parameters train: full FT, linear probing, attention tuning, BitFit."""

from __future__ import annotations

from . import Method, register
from .baseline import BaselineConfig, build_baseline


def _register(name: str, summary: str, trainable, lr: float) -> None:
    build = lambda cfg, device=None, source="online": build_baseline(cfg, trainable, device=device)  # noqa: E731
    register(Method(name, summary, BaselineConfig, BaselineConfig, build, default_lr=lr))


def _attention(name: str, _) -> bool:
    return ".attn." in name  # qkv and proj weights + biases (and q/k norms if the ViT has them)


def _bias(name: str, _) -> bool:
    return name.endswith(".bias")


_register("full_ft", "full fine-tuning: every ViT parameter trains", lambda n, p: True, 1e-4)
_register("linear", "linear probing: a new head on the frozen ViT's CLS feature", lambda n, p: False, 1e-3)
_register("attn_tune", "attention tuning: only the attention layers' weights (and the head) train", _attention, 1e-4)
_register("bitfit", "BitFit: only the biases (and the head) train", _bias, 1e-3)
