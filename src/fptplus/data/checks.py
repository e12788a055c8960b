"""Dataset checks that run right after indexing, before any compute: nothing reaches a model that would silently
change a reported AUC.

- `check_names`: every path fptplus will write into CSV/JSON/YAML records must be valid UTF-8 (refused, named).
- `check_files`: one file reached through two paths (symlinks, hard links, `./a.png` vs `/data/a.png`) is
  refused with both paths, since it could carry two labels or sit in two splits.
- `find_duplicates`: byte-identical files (same size, then same sha256 — only files whose size collides with
  another's are read): refused when they carry different labels (unless allowed), otherwise reported.
- `is_mask`: `name_mask.png` next to `name.png` looks like a segmentation mask (a common layout of public
  datasets) and is left out of folder scans and CSVs unless asked for.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..files import display
from .decode import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from .index import DataIndex

MASK_SUFFIX = re.compile(r"^(?P<stem>.+?)[ _-](?:mask|segmentation|seg)(?:[ _-]?\d+)?$", re.IGNORECASE)
RENAME_HINT = "rename it to UTF-8 (e.g. `convmv -f latin1 -t utf8 -r --notest FOLDER`)"


def not_utf8(text: str) -> bool:
    """Whether `text` holds bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def bad_names(names: Iterable[str]) -> list[str]:
    """The names (shown printable) that are not valid UTF-8."""
    return [display(n) for n in names if not_utf8(str(n))]


def is_mask(path: Path) -> Path | None:
    """The image `path` looks like the segmentation mask of (a sibling with the stem before `_mask`), or None."""
    m = MASK_SUFFIX.match(path.stem)
    if not m:
        return None
    for ext in IMAGE_EXTENSIONS:
        for candidate in (path.with_name(m["stem"] + ext), path.with_name(m["stem"] + ext.upper())):
            if candidate != path and candidate.is_file():
                return candidate
    return None


def same_samples(reader: Any, paths: list[str]) -> list[tuple[int, int]]:
    """Pairs (first, again) of positions in `paths` whose samples are the same bytes (the reader's identity:
    one inode for files, so symlinks, hard links and two spellings of one path all count)."""
    seen: dict[Any, int] = {}
    pairs = []
    for i, p in enumerate(paths):
        ident = reader.identity(p)
        if ident is None:
            continue
        if ident in seen:
            pairs.append((seen[ident], i))
        else:
            seen[ident] = i
    return pairs


def byte_duplicates(reader: Any, paths: list[str]) -> list[list[int]]:
    """Groups (positions in `paths`, ≥ 2 each) of byte-identical samples. Only same-size samples are read."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        info = reader.info(p)
        if info is not None:
            by_size[info.size].append(i)
    groups = []
    for members in by_size.values():
        if len(members) < 2:
            continue
        by_hash: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_hash[hashlib.sha256(reader.read(paths[i])[0]).hexdigest()].append(i)
        groups += [g for g in by_hash.values() if len(g) > 1]
    return sorted(groups)


class FolderScan:
    """State shared by the folder scans of one index: folders seen (loop detection) and masks left out."""

    def __init__(self, include_masks: bool) -> None:
        self.include_masks = include_masks
        self.folders: dict[tuple[int, int], str] = {}
        self.masks: list[str] = []
        self.mask_pairs: list[tuple[str, str]] = []

    def enter(self, folder: Path, shown: str) -> None:
        """Refuses a folder reached a second time (a symlink loop, or two links to one folder)."""
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
        if key in self.folders:
            raise DataError(
                f"folder {display(shown)} is the same folder as {display(self.folders[key])} (a symlink loop or a "
                "second link to it): its images would be counted twice, possibly under two labels or in two "
                "splits. Remove the link, or list the images in a CSV manifest"
            )
        self.folders[key] = shown

    def keep(self, path: Path, shown: str) -> bool:
        """False for a likely segmentation mask (recorded) unless masks are included."""
        if self.include_masks:
            return True
        base = is_mask(path)
        if base is None:
            return True
        self.masks.append(shown)
        self.mask_pairs.append((shown, base.name))
        return False


def _where(index: DataIndex, i: int) -> str:
    s = index.samples[i]
    return f"{display(s.path)} ({index.label_text(s.label) or 'no label'}, {s.split})"


def check_files(index: DataIndex, allow_duplicates: bool = False, limit: int = 5) -> None:
    """Refuses non-UTF-8 names and one file under two paths; reports (or refuses) byte-identical files."""
    bad = bad_names([str(Path(index.root).resolve()), *index.classes, *(s.path for s in index.samples)])
    if bad:
        shown = ", ".join(bad[:limit])
        raise DataError(
            f"file or folder names that are not valid UTF-8 ({len(bad)}), e.g. {shown}: fptplus writes every path "
            f"into its CSV/JSON records; {RENAME_HINT}"
        )
    paths = [s.path for s in index.samples]
    pairs = same_samples(index.reader, paths)
    if pairs:
        shown = "; ".join(f"{_where(index, a)} and {_where(index, b)}" for a, b in pairs[:limit])
        raise DataError(f"files reached by two paths (symlinks or hard links; {len(pairs)}): {shown}. "
                        "Each image must appear once; remove the extra links")  # fmt: skip
    groups = byte_duplicates(index.reader, paths)
    if not groups:
        return
    conflicting = [g for g in groups if len({index.samples[i].label for i in g}) > 1]
    crossing = [g for g in groups if len({index.samples[i].split for i in g}) > 1]
    listing = "; ".join(" = ".join(_where(index, i) for i in g) for g in (conflicting or groups)[:limit])
    if conflicting and not allow_duplicates:
        raise DataError(
            f"byte-identical image files with different labels ({len(conflicting)} groups): {listing}. One image "
            "cannot be two classes: fix the labels or remove the copies, or pass --allow-duplicates to keep them"
        )
    leak = f", {len(crossing)} across splits: an image seen in training is also evaluated" if crossing else ""
    relabel = f", {len(conflicting)} with different labels (allowed)" if conflicting else ""
    index.warnings.append(f"byte-identical image files ({len(groups)} groups{leak}{relabel}): {listing}")
