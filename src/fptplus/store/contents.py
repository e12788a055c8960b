"""What a reader checks before it trusts a store's bytes.

    once per file version   every shard file's sha256 against the one the preload recorded in the manifest (a
                            permuted, zeroed, truncated or swapped shard is refused by name). A file that matched is
                            recorded in the cache (`files.cache_dir()/verified-shards.json`) with its device, inode,
                            size, modification and change times: it is hashed again only when one of them moved —
                            and any write to it moves its change time, even one that restores the modification time.
    on every read           the sample's token indices lie inside the frozen model's sequence (`FeatureStore`).

`fptplus preload --verify` re-hashes everything unconditionally (and checks the images).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import cache_dir, display, human_bytes, read_json, write_json_atomic
from ..weights import file_sha256
from .format import StoreError, shard_file

CACHE_FILE = "verified-shards.json"
CACHE_VERSION = 1


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _load(path: Path) -> dict[str, Any]:
    try:
        record = read_json(path)
    except Exception:
        return {}
    return record.get("files", {}) if isinstance(record, dict) and record.get("version") == CACHE_VERSION else {}


class VerifiedFiles:
    """A record, in the user's cache folder, of files whose bytes were hashed, keyed by their real path and
    stamped with (device, inode, size, mtime, ctime): a file is trusted without reading it again only while its
    stamp is unchanged — any write to it moves its ctime, which `touch` cannot set back."""

    def __init__(self, name: str) -> None:
        self.path = cache_dir() / name
        self.known = _load(self.path)
        self.dirty = False

    def sha256(self, key: str, stamp: list[int]) -> str | None:
        entry = self.known.get(key)
        return entry.get("sha256") if isinstance(entry, dict) and entry.get("stamp") == stamp else None

    def add(self, key: str, stamp: list[int], sha256: str) -> None:
        self.known[key] = {"stamp": stamp, "sha256": sha256}
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        self.known = {k: v for k, v in self.known.items() if os.path.exists(k.split("::")[0])}  # forget gone files
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, {"version": CACHE_VERSION, "files": self.known})
        except OSError:
            pass  # a read-only cache folder: the next process hashes again


def verify_shards(root: Path, manifest: dict[str, Any], fields: list[str], log: Callable[[str], None]) -> float:
    """Refuses a store whose shard files differ from the manifest's sha256; returns the seconds spent hashing.

    Files recorded as verified with an unchanged stamp are not read again.
    """
    verified = VerifiedFiles(CACHE_FILE)
    todo = []
    for s, shard in enumerate(manifest["shards"]):
        for f in fields:
            path = shard_file(root, s, f)
            try:
                stamp = _stamp(path)
            except OSError:
                raise StoreError(
                    f"{display(path)} is missing: the feature store {display(root)} is incomplete; rebuild it "
                    f"(fptplus preload ... --out {display(root)} --overwrite)"
                ) from None
            want = shard["sha256"].get(f)
            key = os.path.realpath(path)
            if verified.sha256(key, stamp) != want:
                todo.append((path, key, stamp, want))
    if not todo:
        return 0.0
    size = sum(stamp[2] for _, _, stamp, _ in todo)
    log(f"checking {len(todo)} shard files of {display(root)} against their recorded sha256 ({human_bytes(size)}; "
        "once per file version)")  # fmt: skip
    t0 = time.perf_counter()
    for path, key, stamp, want in todo:
        if file_sha256(path) != want:
            raise StoreError(
                f"{display(path)} differs from what the preload wrote (sha256 mismatch: the file was damaged, edited "
                f"or swapped): the feature store {display(root)} cannot be trusted. Rebuild it (fptplus preload ... "
                f"--out {display(root)} --overwrite); `fptplus preload ... --verify` lists every damaged file"
            )
        if _stamp(path) == stamp:  # unchanged while it was read
            verified.add(key, stamp, want)
    verified.save()
    return time.perf_counter() - t0
