"""What the audit's copies become: a CSV manifest whose `group` column keeps every set of copies (byte-, pixel- or
near-duplicates, merged with the dataset's own groups) in one split, and a record `fptplus train` reads to warn
when a split puts copies on both sides.

    OUT/grouped.csv           path (absolute), label (or one 0/1 column per label), group[, split]
    CACHE/audits/KEY.json     the dataset's copy clusters (KEY: its path), read by `train` (`data.copies`)

The split column is kept only when the dataset has an official split (split folders, a CSV `split` column): an
automatic split of grouped.csv is then patient- and copy-grouped; an official split stays the user's to fix.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from ..data.index import DataIndex, label_bits

GROUPED_CSV = "grouped.csv"


def _components(index: DataIndex, clusters: Sequence[Sequence[int]]) -> list[str]:
    """A group name per sample: samples linked by a copy cluster or by the dataset's own group share one."""
    parent = list(range(len(index.samples)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, s in enumerate(index.samples):
        if s.group:
            union(i, first.setdefault(s.group, i))
    for members in clusters:
        for m in members[1:]:
            union(members[0], m)
    roots = [find(i) for i in range(len(index.samples))]
    members: dict[int, list[int]] = {}
    for i, r in enumerate(roots):
        members.setdefault(r, []).append(i)
    names: dict[int, str] = {}
    copies = 0
    for r, ms in members.items():
        own = next((index.samples[j].group for j in ms if index.samples[j].group), None)
        if own is None and len(ms) > 1:
            own, copies = f"copies-{copies}", copies + 1
        names[r] = own or ""
    return [names[r] for r in roots]


def write_grouped_csv(index: DataIndex, clusters: Sequence[Sequence[int]], out: Path) -> Path:
    """OUT/grouped.csv: every image with a group that keeps its copies together (see the module docstring)."""
    groups = _components(index, clusters)
    official = "automatic split" not in index.source
    label_cols = list(index.classes) if index.multilabel else ["label"]
    columns = ["path", *label_cols, "group", *(["split"] if official else [])]
    path = Path(out) / GROUPED_CSV
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for s, g in zip(index.samples, groups, strict=True):
            bits = label_bits([s.label], len(index.classes))[0]
            labels = list(bits) if index.multilabel else [index.classes[s.label]]
            w.writerow([index.reader.locate(s.path), *labels, g, *([s.split] if official else [])])
    return path
