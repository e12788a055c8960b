"""Dataset sources: one list of `Sample(path, label, split)` from three layouts.

(a) split folders   root/{train,val,test}/<class>/...      (the authors' layout; "valid"/"validation" accepted)
(b) class folders   root/<class>/...                       → stratified 70/10/20 split with a seed
(c) CSV manifest    path,label[,split][,group][,extra...]  → official split, or an automatic one that keeps
                                                             every group (e.g. patient) inside one split

Class names are folder names or CSV labels, sorted (numerically when all are integers), so label indices
are the same whichever layout or machine produced them. Refused with a clear error: empty class folders,
duplicate paths, missing files, unknown labels, unknown split names, and a class with no training images.
A class absent from val or test is refused too unless `allow_missing_classes=True` (its AUC is undefined).
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FPTPlusError
from .decode import IMAGE_EXTENSIONS

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


class DataError(FPTPlusError, ValueError):
    """The dataset on disk does not fit what fptplus expects."""


@dataclass(frozen=True)
class Sample:
    """One image: `path` relative to the data root (POSIX; absolute if outside it), class index, split, group."""

    path: str
    label: int
    split: str
    group: str | None = None


@dataclass
class DataIndex:
    """Every sample of a dataset with its class names. `ignored` lists non-image files skipped by scans."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    source: str
    ignored: list[str] = field(default_factory=list)

    def abspath(self, sample: Sample) -> Path:
        return Path(sample.path) if os.path.isabs(sample.path) else self.root / sample.path

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
        lines = [f"{len(self.samples)} images, {len(self.classes)} classes ({self.source}: {self.root})"]
        for name in SPLITS:
            per = ", ".join(f"{c}={n}" for c, n in zip(self.classes, counts[name], strict=True))
            lines.append(f"  {name:5s} {sum(counts[name]):6d}  ({per})")
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> None:
        """Writes `path,label,split,group` with absolute paths: a manifest reloadable with `load_index`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split", "group"])
            for s in self.samples:
                w.writerow([self.abspath(s).resolve().as_posix(), self.classes[s.label], s.split, s.group or ""])
        os.replace(tmp, path)


def load_index(
    data: str | Path,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    classes: Sequence[str] | None = None,
    allow_missing_classes: bool = False,
) -> DataIndex:
    """Builds the index from a CSV file, a split-folder root or a class-folder root.

    Args:
        data: CSV manifest or dataset folder.
        seed: seed of the automatic split (class folders, or a CSV without a split column).
        fractions: train/val/test fractions of the automatic split.
        classes: the expected class names (any other label is refused); default: the labels found.
        allow_missing_classes: accept classes absent from val or test.
    """
    data = Path(data)
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise DataError(f"{data} is a file but not a .csv manifest; pass a dataset folder or a CSV file")
        index = _from_csv(data, seed, fractions, classes)
    elif data.is_dir():
        sub = {p.name.lower(): p for p in data.iterdir() if p.is_dir()}
        if any(SPLIT_ALIASES.get(n) == "train" for n in sub):
            index = _from_split_folders(data, sub, classes)
        else:
            index = _from_class_folders(data, seed, fractions, classes)
    else:
        raise DataError(f"dataset path {data} does not exist")
    validate(index, allow_missing_classes)
    return index


def sort_classes(names: set[str]) -> list[str]:
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _scan(folder: Path, root: Path, ignored: list[str]) -> list[str]:
    """Image files under `folder` (recursive, hidden entries skipped), as POSIX paths relative to `root`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = Path(dirpath, name).relative_to(root).as_posix()
            (found if Path(name).suffix.lower() in IMAGE_EXTENSIONS else ignored).append(rel)
    return found


def _class_dirs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _check_classes(found: set[str], classes: Sequence[str] | None, where: str) -> list[str]:
    if classes is None:
        return sort_classes(found)
    unknown = sorted(found - set(classes))
    if unknown:
        raise DataError(f"unknown labels {unknown} in {where}; expected classes: {list(classes)}")
    return list(classes)


def _from_split_folders(root: Path, sub: dict[str, Path], classes: Sequence[str] | None) -> DataIndex:
    splits: dict[str, Path] = {}
    for name, path in sub.items():
        canonical = SPLIT_ALIASES.get(name)
        if canonical:
            if canonical in splits:
                two = f"{splits[canonical].name}, {path.name}"
                raise DataError(f"{root} has two folders for the {canonical} split: {two}")
            splits[canonical] = path
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise DataError(
            f"{root} looks like a split layout (it has {sorted(p.name for p in splits.values())}) but lacks "
            f"{missing}; provide train/, val/ and test/ folders, or pass a class-folder root for an automatic split"
        )
    per_split = {s: _class_dirs(p) for s, p in splits.items()}
    names = _check_classes(set().union(*per_split.values()), classes, str(root))
    samples, ignored = [], []
    for split in SPLITS:
        for cname, folder in per_split[split].items():
            files = _scan(folder, root, ignored)
            if not files:
                raise DataError(f"class folder {folder} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            samples += [Sample(f, names.index(cname), split) for f in files]
    return DataIndex(root, names, samples, "split folders", ignored)


def _from_class_folders(root: Path, seed: int, fractions: Sequence[float], classes: Sequence[str] | None) -> DataIndex:
    dirs = _class_dirs(root)
    if not dirs:
        raise DataError(
            f"{root} has no class folders; expected root/<class>/<images>, root/{{train,val,test}}/<class>/..., "
            "or a CSV manifest with path,label columns"
        )
    names = _check_classes(set(dirs), classes, str(root))
    paths, labels, ignored = [], [], []
    for cname, folder in dirs.items():
        files = _scan(folder, root, ignored)
        if not files:
            raise DataError(f"class folder {folder} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        paths += files
        labels += [names.index(cname)] * len(files)
    splits = assign_splits(labels, [None] * len(labels), seed, fractions, names)
    samples = [Sample(p, y, s) for p, y, s in zip(paths, labels, splits, strict=True)]
    return DataIndex(root, names, samples, f"class folders, automatic split (seed {seed})", ignored)


def _from_csv(path: Path, seed: int, fractions: Sequence[float], classes: Sequence[str] | None) -> DataIndex:
    root = path.parent
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise DataError(f"{path}: the header must contain 'path' and 'label' columns, found {columns}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise DataError(f"{path}: no rows")
    problems, seen, missing = [], {}, []
    for i, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            problems.append(f"line {i}: empty path or label")
            continue
        full = Path(row["path"]) if os.path.isabs(row["path"]) else root / row["path"]
        key = os.path.normcase(os.path.normpath(full))
        if key in seen:
            problems.append(f"line {i}: duplicate path {row['path']!r} (first on line {seen[key]})")
        seen[key] = i
        if not full.is_file():
            missing.append(row["path"])
        if "split" in columns and SPLIT_ALIASES.get(row["split"].lower()) is None:
            problems.append(f"line {i}: split {row['split']!r} is not one of train/val/test")
    if missing:
        problems.append(f"{len(missing)} listed files do not exist, e.g. {missing[:5]}")
    if problems:
        more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
        raise DataError(f"{path}: " + "; ".join(problems[:10]) + more)
    names = _check_classes({r["label"] for r in rows}, classes, str(path))
    labels = [names.index(r["label"]) for r in rows]
    groups = [r.get("group") or None for r in rows]
    rel = [Path(r["path"]).as_posix() for r in rows]
    if "split" in columns:
        splits = [SPLIT_ALIASES[r["split"].lower()] for r in rows]
        source = "CSV manifest, official split"
    else:
        splits = assign_splits(labels, groups, seed, fractions, names)
        grouped = " grouped by 'group'" if any(groups) else ""
        source = f"CSV manifest, automatic split{grouped} (seed {seed})"
    samples = [Sample(p, y, s, g) for p, y, s, g in zip(rel, labels, splits, groups, strict=True)]
    return DataIndex(root, names, samples, source)


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


def validate(index: DataIndex, allow_missing_classes: bool = False) -> None:
    """Refuses classes with no training images (and, unless allowed, classes absent from val/test)."""
    counts = index.counts()
    for c, name in enumerate(index.classes):
        if counts["train"][c] == 0:
            raise DataError(f"class {name!r} has no training images (val {counts['val'][c]}, test {counts['test'][c]})")
        absent = [s for s in ("val", "test") if counts[s][c] == 0]
        if absent and not allow_missing_classes:
            raise DataError(
                f"class {name!r} has no images in {' and '.join(absent)}: its AUC would be undefined there. "
                "Add images, or pass allow_missing_classes=True (--allow-missing-classes) to accept it."
            )
    if len(index.classes) < 2:
        raise DataError(f"{index.root}: need at least 2 classes, found {index.classes}")
