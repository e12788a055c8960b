"""Backbone families behind one seam: `family_of(name)` picks the family that owns a backbone name.

    vit_base_patch16_224, vit_small_patch14_dinov2, ...   timm (`timm_vit`, the default: names without a prefix)
    hf:google/vit-base-patch16-384, hf:/models/rad-dino  Hugging Face transformers ViTModel / Dinov2Model (`hf_vit`)

Adding a family is one module in this package with a `BackboneFamily` subclass and a `register_family(...)` call
(every module here is imported when the package is). The shape facts of a (name, resolution, overrides) are
computed once per process (`lpm_spec`) and shared by the model, the store, the trainer and the benchmarks.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._utils import Size, to_hw
from ..errors import ConfigError, WeightsError
from ..weights import HUB, NONE, RANDOM_INIT_SEED, SOURCES, file_sha256, folder_identity, is_random
from .base import AttentionMode, BackboneFamily, LPMSpec, Pooled, QKVSink

_FAMILIES: list[BackboneFamily] = []


def register_family(family: BackboneFamily) -> BackboneFamily:
    """Adds a family; prefixed families are asked before the default (prefix-less) one."""
    if any(type(f) is type(family) for f in _FAMILIES):
        raise ValueError(f"backbone family {type(family).__name__} is already registered")
    _FAMILIES.append(family)
    _FAMILIES.sort(key=lambda f: f.prefix == "")
    return family


def families() -> list[BackboneFamily]:
    return list(_FAMILIES)


def family_of(name: str) -> BackboneFamily:
    """The family that owns a backbone name."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone must be a non-empty name, got {name!r}")
    for family in _FAMILIES:
        if family.owns(name):
            return family
    known = ", ".join(f.prefix or "(no prefix)" for f in _FAMILIES)
    raise ConfigError(f"no backbone family owns {name!r}; prefixes: {known}")


def create_backbone(
    name: str,
    img_size: Size,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> nn.Module:
    """The ViT `name` at `img_size`, no head (see `BackboneFamily.create`)."""
    return family_of(name).create(name, img_size, weights, device, **overrides)


def lpm_spec(name: str, img_size: Size, overrides: dict[str, Any] | None = None) -> LPMSpec:
    """Shape facts of backbone `name` at `img_size` (a shape-only build, cached: computed once per process)."""
    hw = to_hw(img_size, "img_size")
    return _spec(name, hw, json.dumps(overrides or {}, sort_keys=True, default=str))


@lru_cache(maxsize=64)
def _spec(name: str, hw: tuple[int, int], overrides: str) -> LPMSpec:
    family = family_of(name)
    return family.spec(name, family.create(name, hw, None, "meta", **json.loads(overrides)))


def spec_of(name: str, model: nn.Module) -> LPMSpec:
    """Shape facts of a model already built."""
    return family_of(name).spec(name, model)


def check_weights_source(backbone: str, weights: str | os.PathLike | None) -> None:
    """Refuses an unusable weights choice up front, before any data is read or any store is built."""
    from ..pretrained import BUILTIN, TIMM_NAME

    if weights is None:
        raise ConfigError(f"no --weights given; the frozen ViT needs weights: {SOURCES}")
    text = str(weights)
    if text.lower() in (NONE, HUB):
        return
    if text.startswith("builtin:"):
        if text != BUILTIN:
            raise ConfigError(f"unknown built-in weights {text!r}; the built-in weights are {BUILTIN}")
        if backbone.split(".")[0] != TIMM_NAME:
            raise ConfigError(f"{BUILTIN} is a {TIMM_NAME}; pass --backbone {TIMM_NAME} (got {backbone})")
        return
    family_of(backbone).check_weights(backbone, text)
    if not Path(text).exists():
        raise WeightsError(f"weight file {text!r} does not exist; --weights takes {SOURCES}")


def weights_identity(name: str, weights: str | os.PathLike | None) -> dict[str, str]:
    """What identifies the LPM's weights without building it: a file's sha256, the hub id, or random init."""
    if is_random(weights):
        return {"source": "random-init", "seed": str(RANDOM_INIT_SEED)}
    if str(weights).startswith("builtin:"):
        from ..pretrained import resolve_weights

        weights = resolve_weights(weights)
    if str(weights) == HUB:
        return family_of(name).hub_identity(name)
    path = Path(weights)
    if path.is_dir():
        return folder_identity(path)
    if not path.is_file():
        raise WeightsError(f"weight file {str(path)!r} does not exist (pass an existing file, or weights='hub')")
    return {"source": "file", "sha256": file_sha256(path)}


def set_attention(model: nn.Module, mode: AttentionMode):
    """Every family's attention inside `model` (LPM, side network, baselines) to "eager" or "fused"; returns
    a function that restores the previous settings."""
    restores = [family.set_attention(model, mode) for family in _FAMILIES]

    def restore() -> None:
        for r in restores:
            r()

    return restore


__all__ = [
    "AttentionMode",
    "BackboneFamily",
    "LPMSpec",
    "Pooled",
    "QKVSink",
    "check_weights_source",
    "create_backbone",
    "families",
    "family_of",
    "lpm_spec",
    "register_family",
    "set_attention",
    "spec_of",
    "weights_identity",
]


def _register_modules() -> None:
    """Imports every module of this package: a family is one module that calls `register_family`."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_register_modules()
