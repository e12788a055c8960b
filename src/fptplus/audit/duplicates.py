"""Copies inside a dataset: byte-identical files, pixel-identical images (re-encoded or renamed copies) and
near-duplicates, grouped, and whether a group crosses splits, labels
or patient groups — a copy in train and test is a leak; a copy under two labels is a labelling error.

A near-duplicate needs two things: 64-bit DCT perceptual hashes within `max_distance` bits, and grey 64 px
thumbnails whose Pearson correlation reaches `min_correlation`. The hash alone is not enough for radiographs: on
covid-cxr, four pairs of different patients' chest X-rays lie within 4 bits (thumbnail correlation ≤ 0.947), while
the one re-encoded copy there sits at 2 bits and 0.986.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..data.index import DataIndex
from .features import ImageFacts


@dataclass
class DuplicateGroup:
    kind: str  # "byte-identical", "pixel-identical" or "near-duplicate"
    members: list[int]  # sample indices
    distance: int  # largest Hamming distance of the perceptual hashes inside the group (0 for identical)
    crosses: list[str]  # of "split", "label", "group"

    def to_dict(self, index: DataIndex) -> dict:
        samples = [index.samples[i] for i in self.members]
        images = [{"path": s.path, "label": index.label_text(s.label), "split": s.split, "group": s.group}
                  for s in samples]  # fmt: skip
        return {"kind": self.kind, "distance": self.distance, "crosses": self.crosses, "images": images}


def _union_find(n: int, pairs) -> list[list[int]]:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def hamming_pairs(hashes: list[int | None], max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair of 64-bit hashes within `max_distance` (vectorised, O(n²) bit counts)."""
    ids = [i for i, h in enumerate(hashes) if h is not None]
    if len(ids) < 2:
        return []
    h = np.array([hashes[i] for i in ids], dtype=np.uint64)
    as_bytes = h.view(np.uint8).reshape(len(h), 8)
    out = []
    for a in range(len(h) - 1):  # one row at a time: memory O(n)
        x = np.bitwise_xor(as_bytes[a + 1 :], as_bytes[a])
        d = np.unpackbits(x, axis=1).sum(1)
        for off in np.nonzero(d <= max_distance)[0]:
            out.append((ids[a], ids[a + 1 + int(off)], int(d[off])))
    return out


def thumb_correlation(thumbs: np.ndarray, a: int, b: int) -> float:
    """Pearson correlation of two (H, W, 3) uint8 thumbnails in grey."""
    x, y = (thumbs[i].astype(np.float64).mean(2).ravel() for i in (a, b))
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float(np.array_equal(x, y))


def find_duplicates(
    index: DataIndex,
    facts: list[ImageFacts],
    thumbs: np.ndarray,
    max_distance: int = 4,
    min_correlation: float = 0.97,
) -> list[DuplicateGroup]:
    """Groups of copies, the strongest kind first; each image is in at most one group of each kind."""
    groups: list[DuplicateGroup] = []
    seen_pairs: set[tuple[int, int]] = set()
    for kind, key in (("byte-identical", "sha256"), ("pixel-identical", "pixel_sha256")):
        by = defaultdict(list)
        for i, f in enumerate(facts):
            if getattr(f, key) and not f.error:
                by[getattr(f, key)].append(i)
        for members in by.values():
            pairs = {(a, b) for a in members for b in members if a < b}
            if len(members) > 1 and not pairs <= seen_pairs:
                groups.append(DuplicateGroup(kind, members, 0, _crosses(index, members)))
                seen_pairs |= pairs
    hashes = [int(f.phash, 16) if f.phash else None for f in facts]
    near = [(a, b) for a, b, _ in hamming_pairs(hashes, max_distance)
            if (a, b) not in seen_pairs and thumb_correlation(thumbs, a, b) >= min_correlation]  # fmt: skip
    for members in _union_find(len(facts), near):
        dist = max(bin(hashes[a] ^ hashes[b]).count("1") for a in members for b in members if a < b)
        groups.append(DuplicateGroup("near-duplicate", members, dist, _crosses(index, members)))
    return groups


def _crosses(index: DataIndex, members: list[int]) -> list[str]:
    samples = [index.samples[i] for i in members]
    out = []
    if len({s.split for s in samples}) > 1:
        out.append("split")
    if len({s.label for s in samples}) > 1:
        out.append("label")
    if len({s.group or f"#{i}" for s, i in zip(samples, members, strict=True)}) > 1 and any(s.group for s in samples):
        out.append("group")
    return out
