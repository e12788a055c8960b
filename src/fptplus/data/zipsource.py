"""A dataset inside one .zip archive: the class-folder or split-folder layout, read without extracting.

    my_data.zip:  [top/]<class>/*.png            → stratified 70/10/20 split with a seed
                  [top/]{train,val,test}/<class>/...  → the official split

One optional wrapping folder (e.g. the zip of a folder) is looked through. Samples are the archive's members
(`ZipReader`); hidden entries and `__MACOSX/` are skipped; likely segmentation masks (`x_mask.png` next to
`x.png`) are left out unless asked for, as in folder scans.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..errors import DataError
from ..files import display
from .checks import MASK_SUFFIX
from .decode import IMAGE_EXTENSIONS
from .index import SPLIT_ALIASES, SPLITS, DataIndex, Sample, assign_splits, check_classes
from .readers import ZipReader


def _members(archive: Path) -> list[PurePosixPath]:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [PurePosixPath(n) for n in zf.namelist() if not n.endswith("/")]
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read {display(archive)} as a zip archive ({err})") from None
    return [n for n in names if not any(part.startswith((".", "__MACOSX")) for part in n.parts)]


def _is_mask(member: PurePosixPath, present: set[PurePosixPath]) -> bool:
    m = MASK_SUFFIX.match(member.stem)
    return bool(m) and any(member.with_name(m["stem"] + ext) in present for ext in IMAGE_EXTENSIONS)


def from_zip(
    archive: Path, seed: int, fractions: Sequence[float], classes: Sequence[str] | None, include_masks: bool
) -> tuple[DataIndex, list[str]]:
    """The index of a zip dataset and the members left out as likely masks."""
    members = _members(archive)
    images = [m for m in members if m.suffix.lower() in IMAGE_EXTENSIONS]
    ignored = [str(m) for m in members if m.suffix.lower() not in IMAGE_EXTENSIONS]
    tops = {m.parts[0] for m in images if len(m.parts) > 1}
    skip = 1 if len(tops) == 1 and all(len(m.parts) > 2 for m in images) else 0  # one wrapping folder
    present = set(images)
    masks = [str(m) for m in images if not include_masks and _is_mask(m, present)]
    images = [m for m in images if str(m) not in set(masks)]
    rows = [(m, m.parts[skip:]) for m in images if len(m.parts) > skip + 1]
    split_layout = any(SPLIT_ALIASES.get(parts[0].lower()) == "train" for _, parts in rows)
    if split_layout:
        rows = [(m, p) for m, p in rows if SPLIT_ALIASES.get(p[0].lower()) and len(p) > 2]
        names = check_classes({p[1] for _, p in rows}, classes, display(archive))
        samples = [Sample(str(m), names.index(p[1]), SPLIT_ALIASES[p[0].lower()]) for m, p in sorted(rows)]
        missing = sorted(set(SPLITS) - {s.split for s in samples})
        if missing:
            raise DataError(f"{display(archive)} has split folders but lacks {missing}")
        source = "zip archive, split folders"
    else:
        names = check_classes({p[0] for _, p in rows}, classes, display(archive))
        rows = sorted(rows)
        labels = [names.index(p[0]) for _, p in rows]
        splits = assign_splits(labels, [None] * len(rows), seed, fractions, names)
        samples = [Sample(str(m), y, s) for (m, _), y, s in zip(rows, labels, splits, strict=True)]
        source = f"zip archive, class folders, automatic split (seed {seed})"
    if not samples:
        raise DataError(f"{display(archive)} holds no images in class folders ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    index = DataIndex(archive.parent, names, samples, source, ignored, reader=ZipReader(archive))
    return index, masks
