"""The copies an audit found, kept where `fptplus train` can see them: a record per dataset in the user's cache
(`files.cache_dir()/audits/KEY.json`, KEY from the dataset's path) listing each cluster of byte-, pixel- or
near-duplicate images by locator; `train` warns when its split puts a cluster in two splits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import cache_dir, read_json, write_json_atomic
from .index import DataIndex


def _key(data: str | Path) -> str:
    return hashlib.sha256(str(Path(data).resolve()).encode()).hexdigest()[:24]


def record_clusters(data: str | Path, index: DataIndex, clusters: Sequence[Sequence[int]], report: Path) -> None:
    """Keeps the dataset's copy clusters (by image locator) where `train` looks for them."""
    record = {"data": str(Path(data).resolve()), "report": str(Path(report).resolve()),
              "clusters": [[index.reader.locate(index.samples[i].path) for i in c] for c in clusters]}  # fmt: skip
    try:
        (cache_dir() / "audits").mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_dir() / "audits" / f"{_key(data)}.json", record)
    except OSError:
        pass  # no cache folder: train simply cannot warn


def cross_split_copies(data: str | Path, index: DataIndex) -> dict[str, Any] | None:
    """The audit's copy clusters that `index`'s split puts in more than one split, or None when the dataset was
    never audited (or nothing crosses)."""
    path = cache_dir() / "audits" / f"{_key(data)}.json"
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except Exception:
        return None
    where = {index.reader.locate(s.path): s.split for s in index.samples}
    crossing = []
    for cluster in record.get("clusters", []):
        splits = {where[p] for p in cluster if p in where}
        if len(splits) > 1:
            crossing.append([(p, where[p]) for p in cluster if p in where])
    if not crossing:
        return None
    return {"report": record.get("report", ""), "crossing": crossing}
