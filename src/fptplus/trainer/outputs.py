"""What a run writes besides checkpoints: folder layout, progress lines, metrics history, prediction tables."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def tb(self) -> Path:
        return self.root / "tensorboard"


def write_history(root: Path, history: list[dict[str, Any]]) -> None:
    with open(root / "metrics.jsonl", "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    columns = list(history[0])
    with open(root / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)


def write_prediction_rows(path: Path, names: list[str], labels, probs, classes: list[str]) -> None:
    """predictions_SPLIT.csv: path, true class, one probability column per class (multi-label: `labels` (n, L) of
    0/1, the label column lists the present labels joined by ';')."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", *(f"p_{c}" for c in classes)])
        for name, y, p in zip(names, labels, probs, strict=True):
            text = ";".join(c for c, b in zip(classes, y, strict=True) if b) if np.ndim(y) else classes[int(y)]
            w.writerow([name, text, *(f"{v:.6g}" for v in p)])
