"""Split-level checks: patient groups in more than one split, label balance per split, classes too small for a
split, and images that do not decode."""

from __future__ import annotations

from collections import defaultdict

from ..data.index import SPLITS, DataIndex
from .features import ImageFacts


def leaked_groups(index: DataIndex) -> dict[str, list[str]]:
    """{group: its splits} for every group found in more than one split."""
    where = defaultdict(set)
    for s in index.samples:
        if s.group:
            where[s.group].add(s.split)
    return {g: [s for s in SPLITS if s in splits] for g, splits in sorted(where.items()) if len(splits) > 1}


def balance(index: DataIndex) -> dict[str, dict[str, int]]:
    """{split: {class: images}} (multi-label: images where each label is present)."""
    counts = index.counts()
    return {split: dict(zip(index.classes, counts[split], strict=True)) for split in SPLITS}


def small_classes(index: DataIndex, minimum: int) -> list[str]:
    """Messages for classes with fewer than `minimum` images in a split that has any images."""
    sizes = {s: sum(x.split == s for x in index.samples) for s in SPLITS}
    out = []
    for split, per in balance(index).items():
        if not sizes[split]:
            continue
        for name, n in per.items():
            if n < minimum:
                out.append(f"class {name!r} has {n} image(s) in {split}")
    return out


def decode_failures(facts: list[ImageFacts]) -> list[str]:
    return [f.error for f in facts if f.error]
