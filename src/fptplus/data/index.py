"""The dataset index: `Sample(path, label, split, group)`s with class names, and the seeded stratified split.

Multi-label datasets (`DataIndex.multilabel`, from a CSV with one 0/1 column per label) keep the same `Sample`:
its `label` is the bitmask of the positive labels (bit j set: `classes[j]` present), so every check that compares
labels (duplicates, stores, split records) works unchanged; `label_bits` turns masks into 0/1 targets.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import display
from .decode import DEFAULT_MAX_PIXELS, DecodedImage, DecodeError, byte_budget, decode_bytes
from .readers import FolderReader, Reader

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
MAX_LABELS = 62  # multi-label masks are int64


def label_bits(masks, num: int) -> np.ndarray:
    """(n,) label bitmasks -> (n, num) 0/1 int64 targets."""
    masks = np.asarray(masks, dtype=np.int64).reshape(-1, 1)
    return (masks >> np.arange(num, dtype=np.int64)) & 1


@dataclass(frozen=True)
class Sample:
    """One image: `path` relative to the data root (POSIX; absolute if outside it), class index, split, group."""

    path: str
    label: int
    split: str
    group: str | None = None


@dataclass
class DataIndex:
    """Every sample of a dataset with its class names.

    Attributes:
        root: the folder paths are relative to.
        classes: class names in label order.
        samples: the images.
        source: which layout produced them (for messages).
        ignored: non-image files skipped by folder scans.
        masks: files left out because they look like segmentation masks.
        warnings: what the user should know (byte-identical files, ...), printed by the commands.
        max_pixels: images announcing more pixels are refused from their header (None: no limit).
        reader: where the samples' bytes come from (default: files under `root`; see `readers`).
        multilabel: `classes` are labels that co-occur; each sample's `label` is their bitmask.
    """

    root: Path
    classes: list[str]
    samples: list[Sample]
    source: str
    ignored: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    reader: Reader | None = None
    multilabel: bool = False

    def __post_init__(self) -> None:
        if self.reader is None:
            self.reader = FolderReader(Path(self.root))

    def abspath(self, sample: Sample) -> Path:
        """The file of a sample of a folder dataset (only a `FolderReader` has files; use `reader` otherwise)."""
        if not isinstance(self.reader, FolderReader):
            raise TypeError(f"samples of {self.source} are not files; read them through index.reader")
        return self.reader.path(sample.path)

    def name(self, sample: Sample) -> str:
        """The sample as a message shows it."""
        return self.reader.name(sample.path)

    def load(self, i: int) -> DecodedImage:
        """Decodes sample `i` (DecodeError naming it), within the index's pixel budget."""
        path = self.samples[i].path
        try:
            data, info = self.reader.read(path, byte_budget(self.max_pixels))
        except OSError as err:
            raise DecodeError(f"{self.reader.name(path)}: cannot read ({err.strerror or err})") from err
        except DecodeError as err:
            raise DecodeError(f"{self.reader.name(path)}: {err}") from None
        image = decode_bytes(data, Path(path).suffix, self.reader.name(path), self.max_pixels)
        sha = hashlib.sha256(data).hexdigest()
        return DecodedImage(image, sha, len(data), info.mtime_ns, info.ctime_ns, info.inode)

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict[str, list[int]]:
        """Images per class in each split (multi-label: images where each label is present)."""
        out = {name: [0] * len(self.classes) for name in SPLITS}
        for s in self.samples:
            if self.multilabel:
                for j in range(len(self.classes)):
                    out[s.split][j] += (s.label >> j) & 1
            else:
                out[s.split][s.label] += 1
        return out

    def label_text(self, label: int) -> str:
        """A label as records show it: the class name, or (multi-label) the present labels joined by ';'."""
        if not self.multilabel:
            return self.classes[label]
        return ";".join(c for j, c in enumerate(self.classes) if (label >> j) & 1)

    def strata(self) -> list[int]:
        """What splits and folds stratify on, per sample: the class, or (multi-label) see `multilabel_strata`."""
        labels = [s.label for s in self.samples]
        return multilabel_strata(labels, len(self.classes)) if self.multilabel else labels

    def describe(self) -> str:
        counts = self.counts()
        kind = "labels (multi-label)" if self.multilabel else "classes"
        lines = [f"{len(self.samples)} images, {len(self.classes)} {kind} ({self.source}: {display(self.root)})"]
        for name in SPLITS:
            n = sum(s.split == name for s in self.samples)
            per = ", ".join(f"{c}={k}" for c, k in zip(self.classes, counts[name], strict=True))
            lines.append(f"  {name:5s} {n:6d}  ({per})")
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> None:
        """Writes `path,label,split,group` with absolute paths: a manifest reloadable with `load_index`
        (multi-label: one 0/1 column per label instead of `label`, reloadable with the same label columns)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", *(self.classes if self.multilabel else ["label"]), "split", "group"])
            for s in self.samples:
                if self.multilabel:
                    labels = label_bits([s.label], len(self.classes))[0].tolist()
                else:
                    labels = [self.classes[s.label]]
                w.writerow([self.reader.locate(s.path), *labels, s.split, s.group or ""])
        os.replace(tmp, path)


def multilabel_strata(masks: Sequence[int], num: int) -> list[int]:
    """Per sample: its rarest present label (ties: the first), or `num` for an image with no label present."""
    bits = label_bits(masks, num)
    freq = bits.sum(0)
    order = np.argsort(freq, kind="stable")  # rarest label first
    rank = np.empty(num, dtype=np.int64)
    rank[order] = np.arange(num)
    ranked = np.where(bits == 1, rank, num)  # (n, num)
    best = ranked.min(1)
    return [int(order[r]) if r < num else num for r in best]


def sort_classes(names: set[str]) -> list[str]:
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def check_classes(found: set[str], classes: Sequence[str] | None, where: str) -> list[str]:
    if classes is None:
        return sort_classes(found)
    unknown = sorted(found - set(classes))
    if unknown:
        raise DataError(f"unknown labels {unknown} in {where}; expected classes: {list(classes)}")
    return list(classes)


def assign_splits(
    labels: Sequence[int],
    groups: Sequence[str | None],
    seed: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """Stratified train/val/test assignment that never splits a group.

    Units are groups (samples sharing a group id) or single samples. Each unit is stratified by its majority
    label; within a class the units are shuffled with `seed` and laid end to end, and a unit goes to the split
    its midpoint falls in, so the image counts follow `fractions`. Every class with >= 3 units gets at least
    one unit in each split.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    units: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        units[f"g:{g}" if g else f"s:{i}"].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for uid, members in units.items():
        votes = Counter(labels[i] for i in members)
        by_class[min(votes, key=lambda c: (-votes[c], c))].append(uid)
    rng = random.Random(seed)
    out = [""] * len(labels)
    for cls in sorted(by_class):
        uids = sorted(by_class[cls])
        if len(uids) < 3 and min(fractions) > 0:
            name = class_names[cls] if class_names else cls
            raise DataError(
                f"class {name!r} has {len(uids)} image(s)/group(s); an automatic train/val/test split needs >= 3"
            )
        rng.shuffle(uids)
        total = sum(len(units[u]) for u in uids)
        bounds = (fractions[0] * total, (fractions[0] + fractions[1]) * total)
        chosen, start = [], 0
        for uid in uids:
            mid = start + len(units[uid]) / 2
            chosen.append(0 if mid < bounds[0] else 1 if mid < bounds[1] else 2)
            start += len(units[uid])
        for split in (1, 2):  # no empty val/test for a class that has enough units
            if fractions[split] > 0 and split not in chosen:
                donor = max(i for i, c in enumerate(chosen) if chosen.count(c) > 1)
                chosen[donor] = split
        for uid, split in zip(uids, chosen, strict=True):
            for i in units[uid]:
                out[i] = SPLITS[split]
    return out
