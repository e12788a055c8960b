"""Small generated image files for data/store tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def rgb(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def class_folders(root: Path, counts: dict[str, int], size=(40, 56), seed: int = 0, ext: str = ".png") -> Path:
    """root/<class>/img{i}.png with distinct random content; the same file names in every class."""
    for c, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            save(root / name / f"img{i}{ext}", rgb(*size, seed=seed * 1000 + c * 100 + i))
    return root


def split_folders(root: Path, counts: dict[str, dict[str, int]], size=(40, 56)) -> Path:
    """root/<split>/<class>/img{i}.png."""
    for s, (split, per_class) in enumerate(sorted(counts.items())):
        class_folders(root / split, per_class, size, seed=s + 1)
    return root


def write_csv(path: Path, rows: list[dict], columns: list[str], encoding: str = "utf-8") -> Path:
    """A CSV manifest with these columns."""
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    return path
