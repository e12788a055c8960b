"""Dataset sources: one list of `Sample(path, label, split)` from three layouts.

(a) split folders   root/{train,val,test}/<class>/...      (the authors' layout; "valid"/"validation" accepted)
(b) class folders   root/<class>/...                       → stratified 70/10/20 split with a seed
(c) CSV manifest    path,label[,split][,group][,extra...]  → official split, or an automatic one that keeps
                                                             every group (e.g. patient) inside one split
(d) a .zip of (a) or (b)                                   → read in place (`zipsource`, `readers.ZipReader`)

Class names are folder names or CSV labels, sorted (numerically when all are integers), so label indices
are the same whichever layout or machine produced them. Refused with a clear error: empty class folders,
duplicate paths, missing files, unknown labels, unknown split names, and a class with no training images.
A class absent from val or test is refused too unless `allow_missing_classes=True` (its AUC is undefined).

Then, before any compute (see `checks`): file names that are not UTF-8, one file reached by two paths
(symlink loops, links, relative vs absolute CSV paths) and byte-identical files with different labels are
refused; other byte-identical files are reported in `index.warnings`; files that look like segmentation masks
(`x_mask.png` next to `x.png`) are left out (listed in `index.masks`) unless `include_masks=True`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from ..files import display
from .checks import RENAME_HINT, FolderScan, check_files, not_utf8
from .decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from .index import (
    DEFAULT_FRACTIONS,
    MAX_LABELS,
    SPLIT_ALIASES,
    SPLITS,
    DataIndex,
    Sample,
    assign_splits,
    check_classes,
    multilabel_strata,
    sort_classes,
)
from .zipsource import from_zip

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLITS",
    "SPLIT_ALIASES",
    "DataError",
    "DataIndex",
    "Sample",
    "assign_splits",
    "load_index",
    "sort_classes",
    "validate",
]


def load_index(
    data: str | Path,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    classes: Sequence[str] | None = None,
    allow_missing_classes: bool = False,
    allow_duplicates: bool = False,
    include_masks: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    label_columns: Sequence[str] = (),
) -> DataIndex:
    """Builds the index from a CSV file, a split-folder root or a class-folder root, and checks it.

    Args:
        data: CSV manifest or dataset folder.
        seed: seed of the automatic split (class folders, or a CSV without a split column).
        fractions: train/val/test fractions of the automatic split.
        classes: the expected class names (any other label is refused); default: the labels found.
        allow_missing_classes: accept classes absent from val or test.
        allow_duplicates: accept byte-identical files with different labels (reported as a warning).
        include_masks: keep files that look like segmentation masks (`x_mask.png` next to `x.png`).
        max_pixels: pixel budget of the decoders (see `decode.DEFAULT_MAX_PIXELS`).
        label_columns: a multi-label CSV's 0/1 columns, one per label (the index's classes, in this order).
    """
    data = Path(data)
    if not_utf8(str(data)):
        raise DataError(f"the dataset path {display(data)} is not valid UTF-8; {RENAME_HINT}")
    if label_columns and not (data.is_file() and data.suffix.lower() == ".csv"):
        raise DataError(f"multi-label data (--label-columns) comes from a CSV manifest with one 0/1 column per "
                        f"label; {display(data)} is not a .csv file")  # fmt: skip
    scan = FolderScan(include_masks)
    if data.is_file() and data.suffix.lower() == ".zip":
        index, masks = from_zip(data, seed, fractions, classes, include_masks)
        scan.masks, scan.mask_pairs = masks, [(m, "its image") for m in masks]
    elif data.is_file():
        if data.suffix.lower() != ".csv":
            raise DataError(f"{data} is a file but neither a .csv manifest nor a .zip; pass a dataset folder, a CSV "
                            "manifest or a zip of class folders")  # fmt: skip
        index = _from_csv(data, seed, fractions, classes, scan, label_columns)
    elif data.is_dir():
        scan.enter(data, ".")  # a link back to the root is a loop too
        sub = {p.name.lower(): p for p in data.iterdir() if p.is_dir()}
        if any(SPLIT_ALIASES.get(n) == "train" for n in sub):
            index = _from_split_folders(data, sub, classes, scan)
        else:
            index = _from_class_folders(data, seed, fractions, classes, scan)
    else:
        raise DataError(f"dataset path {data} does not exist")
    index.masks, index.max_pixels = scan.masks, max_pixels
    if scan.masks:
        shown = [f"{display(m)} (next to {display(b)})" for m, b in scan.mask_pairs[:3]]
        index.warnings.append(f"left out likely segmentation masks ({len(scan.masks)}), e.g. "
                              f"{', '.join(shown)}; pass --include-masks to keep them")  # fmt: skip
    validate(index, allow_missing_classes)
    check_files(index, allow_duplicates)
    return index


def _scan(folder: Path, root: Path, ignored: list[str], scan: FolderScan) -> list[str]:
    """Image files under `folder` (recursive, symlinks followed, hidden entries skipped), as POSIX paths
    relative to `root`. A folder reached twice (symlink loop) is refused; likely masks are left out."""
    found = []
    scan.enter(folder, folder.relative_to(root).as_posix())
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in dirnames:
            scan.enter(Path(dirpath, d), Path(dirpath, d).relative_to(root).as_posix())
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                ignored.append(rel)
            elif scan.keep(path, rel):
                found.append(rel)
    return found


def _class_dirs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _from_split_folders(root: Path, sub: dict[str, Path], classes: Sequence[str] | None, scan: FolderScan) -> DataIndex:
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
    for path in splits.values():
        scan.enter(path, path.name)
    per_split = {s: _class_dirs(p) for s, p in splits.items()}
    names = check_classes(set().union(*per_split.values()), classes, str(root))
    samples, ignored = [], []
    for split in SPLITS:
        for cname, folder in per_split[split].items():
            files = _scan(folder, root, ignored, scan)
            if not files:
                raise DataError(f"class folder {folder} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            samples += [Sample(f, names.index(cname), split) for f in files]
    return DataIndex(root, names, samples, "split folders", ignored)


def _from_class_folders(
    root: Path, seed: int, fractions: Sequence[float], classes: Sequence[str] | None, scan: FolderScan
) -> DataIndex:
    dirs = _class_dirs(root)
    if not dirs:
        raise DataError(
            f"{root} has no class folders; expected root/<class>/<images>, root/{{train,val,test}}/<class>/..., "
            "or a CSV manifest with path,label columns"
        )
    names = check_classes(set(dirs), classes, str(root))
    paths, labels, ignored = [], [], []
    for cname, folder in dirs.items():
        files = _scan(folder, root, ignored, scan)
        if not files:
            raise DataError(f"class folder {folder} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        paths += files
        labels += [names.index(cname)] * len(files)
    splits = assign_splits(labels, [None] * len(labels), seed, fractions, names)
    samples = [Sample(p, y, s) for p, y, s in zip(paths, labels, splits, strict=True)]
    return DataIndex(root, names, samples, f"class folders, automatic split (seed {seed})", ignored)


def read_csv_rows(path: Path, label_columns: Sequence[str] = ()) -> tuple[list[str], list[dict[str, str]]]:
    """Header (lower-cased) and rows of a CSV manifest; encoding and syntax problems name the file and the fix.

    `label_columns`: a multi-label manifest's 0/1 columns (then no 'label' column is needed)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {display(path)} ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{display(path)} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}; Latin-1 or Windows "
            "encoding?). Save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 old.csv > new.csv` or 'CSV UTF-8' in Excel"
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"{display(path)}: line {line} holds a NUL byte (a binary file, or a CSV damaged in transfer); "
                        "save it again as a UTF-8 CSV")  # fmt: skip
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        empty = [i + 1 for i, c in enumerate(columns) if not c]
        twice = sorted({c for c in columns if c and columns.count(c) > 1})
        if twice or empty:
            what = f"columns named twice: {twice}" if twice else f"column(s) {empty} have no name"
            raise DataError(
                f"{display(path)}: the header has {what} (names are compared ignoring case and spaces); every column "
                "needs one unique name, or fptplus cannot tell which one holds the labels"
            )
        if label_columns:
            absent = [c for c in label_columns if c.strip().lower() not in columns]
            if "path" not in columns or absent:
                raise DataError(f"{display(path)}: the header must contain 'path' and the label columns; missing "
                                f"{(['path'] if 'path' not in columns else []) + absent}, found {columns}")  # fmt: skip
        elif "path" not in columns or "label" not in columns:
            raise DataError(f"{display(path)}: the header must contain 'path' and 'label' columns, found {columns}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except csv.Error as err:
        raise DataError(f"{display(path)}: not a readable CSV file ({err}); check its quoting") from None
    return columns, rows


def _from_csv(
    path: Path,
    seed: int,
    fractions: Sequence[float],
    classes: Sequence[str] | None,
    scan: FolderScan,
    label_columns: Sequence[str] = (),
) -> DataIndex:
    root = path.parent
    columns, rows = read_csv_rows(path, label_columns)
    if not rows:
        raise DataError(f"{path}: no rows")
    if label_columns:
        rows = _multilabel_rows(path, rows, label_columns)
    problems, seen, missing, kept = [], {}, [], []
    for i, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            problems.append(f"line {i}: empty path or label")
            continue
        full = Path(row["path"]) if os.path.isabs(row["path"]) else root / row["path"]
        key = os.path.normcase(os.path.realpath(full))  # ./a.png, /data/a.png and links to it are one file
        if key in seen:
            first = rows[seen[key] - 2]
            labels = f" with labels {first['label']!r} and {row['label']!r}" if first["label"] != row["label"] else ""
            problems.append(f"line {i}: {row['path']!r} is the same file as {first['path']!r} on line "
                            f"{seen[key]}{labels}")  # fmt: skip
        seen[key] = i
        if "split" in columns and SPLIT_ALIASES.get(row["split"].lower()) is None:
            problems.append(f"line {i}: split {row['split']!r} is not one of train/val/test")
        if not full.is_file():
            missing.append(row["path"])
        elif scan.keep(full, row["path"]):
            kept.append(row)
    if missing:
        problems.append(f"{len(missing)} listed files do not exist, e.g. {missing[:5]}")
    if problems:
        more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
        raise DataError(f"{path}: " + "; ".join(problems[:10]) + more)
    rows = kept
    if label_columns:
        names = [c.strip() for c in label_columns]
        labels = [int(r["label"]) for r in rows]  # bitmasks (`_multilabel_rows`)
        strata = multilabel_strata(labels, len(names))
    else:
        names = check_classes({r["label"] for r in rows}, classes, str(path))
        labels = strata = [names.index(r["label"]) for r in rows]
    groups = [r.get("group") or None for r in rows]
    rel = [Path(r["path"]).as_posix() for r in rows]
    if "split" in columns:
        splits = [SPLIT_ALIASES[r["split"].lower()] for r in rows]
        source = "CSV manifest, official split"
    else:
        strata_names = [*names, "(no label)"] if label_columns else names
        splits = assign_splits(strata, groups, seed, fractions, strata_names)
        grouped = " grouped by 'group'" if any(groups) else ""
        stratified = ", stratified by the rarest present label" if label_columns else ""
        source = f"CSV manifest, automatic split{grouped}{stratified} (seed {seed})"
    samples = [Sample(p, y, s, g) for p, y, s, g in zip(rel, labels, splits, groups, strict=True)]
    return DataIndex(root, names, samples, source, multilabel=bool(label_columns))


TRUE, FALSE = {"1", "1.0", "true", "yes", "y", "t"}, {"0", "0.0", "false", "no", "n", "f", ""}


def _multilabel_rows(path: Path, rows: list[dict[str, str]], label_columns: Sequence[str]) -> list[dict[str, str]]:
    """Rows with `label` = the bitmask (as text) of the label columns that hold 1/true (0/false/empty: absent)."""
    keys = [c.strip().lower() for c in label_columns]
    if len(set(keys)) != len(keys):
        raise DataError(f"--label-columns lists a column twice: {list(label_columns)}")
    if len(keys) > MAX_LABELS:
        raise DataError(f"--label-columns lists {len(keys)} columns; at most {MAX_LABELS} labels are supported")
    if len(keys) < 2:
        raise DataError("a multi-label dataset needs at least 2 --label-columns (one 0/1 label: use a 'label' column)")
    out, bad = [], []
    for i, row in enumerate(rows, start=2):
        mask = 0
        for j, k in enumerate(keys):
            value = row.get(k, "").lower()
            if value in TRUE:
                mask |= 1 << j
            elif value not in FALSE:
                bad.append(f"line {i}, column {k!r}: {row.get(k)!r}")
        out.append({**row, "label": str(mask) if row["path"] else ""})
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DataError(f"{display(path)}: label columns must hold 0/1 (or true/false; empty = 0): "
                        f"{'; '.join(bad[:5])}{more}")  # fmt: skip
    return out


def validate(index: DataIndex, allow_missing_classes: bool = False) -> None:
    """Refuses classes with no training images (and, unless allowed, classes absent from val/test).

    Multi-label: a label needs positive training images, and (unless allowed) both positive and negative images
    in val and test (its AUC is undefined otherwise)."""
    counts = index.counts()
    if index.multilabel:
        _validate_multilabel(index, counts, allow_missing_classes)
        return
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


def _validate_multilabel(index: DataIndex, counts: dict[str, list[int]], allow_missing: bool) -> None:
    sizes = {s: sum(x.split == s for x in index.samples) for s in SPLITS}
    for j, name in enumerate(index.classes):
        if counts["train"][j] == 0:
            raise DataError(f"label {name!r} is present in no training image (val {counts['val'][j]}, test "
                            f"{counts['test'][j]})")  # fmt: skip
        constant = [s for s in ("val", "test") if counts[s][j] in (0, sizes[s])]
        if constant and not allow_missing:
            raise DataError(
                f"label {name!r} is {'absent from' if counts[constant[0]][j] == 0 else 'present in'} every image of "
                f"{' and '.join(constant)}: its AUC would be undefined there. Add images, or pass "
                "--allow-missing-classes to accept it (the mean AUC then skips it there)."
            )
