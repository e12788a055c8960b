"""What a run optimises: softmax cross-entropy over classes, or (multi-label) binary cross-entropy per label.

Batches carry `label` as an int per image either way: the class index, or (multi-label) the bitmask of the
present labels (`data.index`), unpacked here into (B, L) 0/1 targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.index import label_bits
from ..errors import ConfigError


def bits(y: torch.Tensor, num: int) -> torch.Tensor:
    """(B,) int64 bitmasks -> (B, num) float 0/1 targets."""
    return ((y.long().unsqueeze(1) >> torch.arange(num, device=y.device)) & 1).float()


@dataclass
class Objective:
    """num_labels: None for one class per image; weight: class weights (cross-entropy) or per-label positive
    weights (BCE's pos_weight), or None."""

    num_labels: int | None = None
    weight: torch.Tensor | None = None

    @property
    def multilabel(self) -> bool:
        return self.num_labels is not None

    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """logits (B, C) and labels (B,) -> the loss (mean, or `sum` over the batch)."""
        w = self.weight.to(logits.device) if self.weight is not None else None
        if not self.multilabel:
            return F.cross_entropy(logits, y, weight=w, reduction=reduction)
        per = F.binary_cross_entropy_with_logits(logits, bits(y, self.num_labels), pos_weight=w, reduction="none")
        per = per.mean(1)  # (B,): mean over labels
        return per.sum() if reduction == "sum" else per.mean()

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.multilabel else logits.softmax(-1)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """What the metrics compare with: class indices (B,), or (B, L) 0/1."""
        return bits(y, self.num_labels).long() if self.multilabel else y


def make_objective(spec: Any, train_labels: list[int], num_classes: int, multilabel: bool) -> Objective:
    """The objective for `TrainConfig.class_weights` (None, "balanced" or a list) over the training labels.

    Multi-label: "balanced" weighs each label's positives by negatives / positives (BCE's pos_weight); a list gives
    the positive weight per label.
    """
    if spec is not None and spec != "balanced" and len(spec) != num_classes:
        what = "labels" if multilabel else "classes"
        raise ConfigError(f"class_weights has {len(spec)} values for {num_classes} {what}")
    if not multilabel:
        if spec == "balanced":
            counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
            spec = len(train_labels) / (num_classes * np.maximum(counts, 1))
        weight = torch.tensor(np.asarray(spec), dtype=torch.float32) if spec is not None else None
        return Objective(None, weight)
    if spec == "balanced":
        pos = label_bits(train_labels, num_classes).sum(0).astype(np.float64)
        spec = (len(train_labels) - pos) / np.maximum(pos, 1)
    weight = torch.tensor(np.asarray(spec), dtype=torch.float32) if spec is not None else None
    return Objective(num_classes, weight)
