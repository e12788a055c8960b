"""Learnable-parameter accounting as the paper defines it: trainable / total (frozen LPM included)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ParamCount:
    """trainable and total parameter counts; `percent` = 100 · trainable / total."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / total {self.total:,} = {self.percent:.4f} %"


def count_parameters(module: nn.Module, extra_frozen: int = 0) -> ParamCount:
    """Counts `module`'s parameters (shared tensors once), plus `extra_frozen` frozen ones kept elsewhere."""
    params = list(module.parameters())  # deduplicated by torch
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return ParamCount(trainable, sum(p.numel() for p in params) + extra_frozen)
