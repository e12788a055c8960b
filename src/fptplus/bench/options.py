"""Typed options of `fptplus bench memory` and `fptplus bench speed` (their flags are generated from these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class BenchOptions:
    """What to measure.

    Attributes:
        backbone: timm name of the ViT.
        backbone_kwargs: extra timm kwargs, e.g. {"depth": 2}.
        img_size: input resolution of the large model.
        batch_size: images per training step.
        num_classes: classifier outputs.
        methods: "all" or comma-separated method names.
    """

    backbone: str = "vit_base_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: int = 512
    batch_size: int = 16
    num_classes: int = 2
    methods: str = "all"


@dataclass
class MemoryOptions(BenchOptions):
    """Peak memory of one steady-state training step.

    Attributes:
        device: "auto" (cuda when present, else the exact meta accounting), "meta", "cuda" or "cpu".
        attention: "eager" keeps the attention map (the paper's baselines), "fused" is timm's SDPA, or "both".
    """

    device: Literal["auto", "meta", "cuda", "cpu"] = "auto"
    attention: Literal["eager", "fused", "both"] = "both"


@dataclass
class SpeedOptions(BenchOptions):
    """Training samples/s and preload img/s.

    Attributes:
        device: "auto" (cuda when present), "cpu" or "cuda".
        steps: timed steps after one warm-up step.
    """

    batch_size: int = 4
    device: Literal["auto", "cpu", "cuda"] = "auto"
    steps: int = 2
