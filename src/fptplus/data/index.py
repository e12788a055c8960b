"""The dataset index: `Sample(path, label, split, group)`s with class names, and the seeded stratified split."""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..files import display
from .decode import DEFAULT_MAX_PIXELS, DecodedImage, DecodeError, decode_bytes
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
            data, info = self.reader.read(path)
        except OSError as err:
            raise DecodeError(f"{self.reader.name(path)}: cannot read ({err.strerror or err})") from err
        image = decode_bytes(data, Path(path).suffix, self.reader.name(path), self.max_pixels)
        return DecodedImage(image, hashlib.sha256(data).hexdigest(), len(data), info.mtime_ns)

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict[str, list[int]]:
        """Images per class in each split."""
        out = {name: [0] * len(self.classes) for name in SPLITS}
        for s in self.samples:
            out[s.split][s.label] += 1
        return out

    def describe(self) -> str:
        counts = self.counts()
        lines = [f"{len(self.samples)} images, {len(self.classes)} classes ({self.source}: {display(self.root)})"]
        for name in SPLITS:
            per = ", ".join(f"{c}={n}" for c, n in zip(self.classes, counts[name], strict=True))
            lines.append(f"  {name:5s} {sum(counts[name]):6d}  ({per})")
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> None:
        """Writes `path,label,split,group` with absolute paths: a manifest reloadable with `load_index`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split", "group"])
            for s in self.samples:
                w.writerow([self.reader.locate(s.path), self.classes[s.label], s.split, s.group or ""])
        os.replace(tmp, path)


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
