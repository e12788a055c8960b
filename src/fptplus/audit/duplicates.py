"""Copies inside a dataset: byte-identical files, pixel-identical images (re-encoded or renamed copies) and
near-duplicates, grouped, and whether a group crosses splits, labels
or patient groups — a copy in train and test is a leak; a copy under two labels is a labelling error.

A near-duplicate needs two things: 64-bit DCT perceptual hashes within `max_distance` bits, and grey 64 px
thumbnails whose Pearson correlation reaches `min_correlation`. The hash alone is not enough for radiographs: on
covid-cxr, four pairs of different patients' chest X-rays lie within 4 bits (thumbnail correlation ≤ 0.947), while
the one re-encoded copy there sits at 2 bits and 0.986.

Nor are both enough when every image shares one layout: on IDRiD (fundus photographs: an orange disc on black) 312
pairs of different eyes pass both tests. So a third one asks for shared *detail*: the grey thumbnails minus their
5 px box blur must correlate at least halfway from how alike this dataset's unrelated pairs are (the 99.9th
percentile over up to 20,000 random pairs that fail the first two tests) to identity, capped at 0.98. Measured: a
half-size JPEG-60 copy of a fundus photograph ≥ 0.992; unrelated pairs' 99.9th percentile ~0.95 on IDRiD (the
threshold 0.97 there), 0.46 on covid-cxr (threshold 0.73: its copy, at 0.88, stays found), 0.71 on ISIC.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

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


DETAIL_BLUR = 5  # px of the 64 px thumbnail: the box blur subtracted to keep the detail
DETAIL_PAIRS = 20_000  # random unrelated pairs that measure how alike this dataset's images are anyway
DETAIL_CAP = 0.98  # the detail threshold never asks for more than this


def detail_vectors(thumbs: np.ndarray) -> np.ndarray:
    """(n, H·W) unit vectors: each grey thumbnail minus its box blur, centred (cosine = Pearson correlation)."""
    grey = thumbs.astype(np.float32).mean(3)
    detail = (grey - ndimage.uniform_filter(grey, size=(1, DETAIL_BLUR, DETAIL_BLUR))).reshape(len(thumbs), -1)
    detail -= detail.mean(1, keepdims=True)
    return detail / np.maximum(np.linalg.norm(detail, axis=1, keepdims=True), 1e-12)


def detail_threshold(vectors: np.ndarray, candidates: set[tuple[int, int]], seed: int = 0) -> float:
    """Halfway from the 99.9th percentile of unrelated pairs' detail correlation to 1 (at most DETAIL_CAP, at least
    0.5); unrelated = random pairs that are not near-duplicate candidates."""
    n = len(vectors)
    if n < 3:
        return 0.5
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, DETAIL_PAIRS), rng.integers(0, n, DETAIL_PAIRS)
    keep = [(x, y) for x, y in zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist(), strict=True)
            if x != y and (x, y) not in candidates]  # fmt: skip
    if not keep:
        return 0.5
    i, j = np.array(keep).T
    q = float(np.percentile((vectors[i] * vectors[j]).sum(1), 99.9))
    return float(min(DETAIL_CAP, max(0.5, q + (1 - q) / 2)))


def find_duplicates(
    index: DataIndex,
    facts: list[ImageFacts],
    thumbs: np.ndarray,
    max_distance: int = 4,
    min_correlation: float = 0.97,
) -> tuple[list[DuplicateGroup], float]:
    """Groups of copies, the strongest kind first; each image is in at most one group of each kind; and the detail
    threshold this dataset's near-duplicates had to reach (see the module docstring)."""
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
    vectors = detail_vectors(thumbs)
    threshold = detail_threshold(vectors, set(near) | seen_pairs)
    near = [(a, b) for a, b in near if float(vectors[a] @ vectors[b]) >= threshold]
    for members in _union_find(len(facts), near):
        dist = max(bin(hashes[a] ^ hashes[b]).count("1") for a in members for b in members if a < b)
        groups.append(DuplicateGroup("near-duplicate", members, dist, _crosses(index, members)))
    return groups, threshold


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
