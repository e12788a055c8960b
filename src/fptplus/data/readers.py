"""Where a sample's bytes come from: the one seam between "a sample" and "a file on disk".

Every part of fptplus that touches an image's bytes (decoding, hashing, stale-image checks, duplicate checks, the
split record) asks the index's reader; nothing else builds a path from a sample. A new kind of dataset container
(a tar shard, a DICOM export with its own index, an object store) is one new reader plus a source that lists its
samples.

    FolderReader   samples are files under a root folder (sample.path relative to it, or absolute)
    ZipReader      samples are members of one .zip archive (sample.path = member name)
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from ..files import display


@dataclass(frozen=True)
class FileInfo:
    """What tells cheaply whether a sample's bytes may have changed: their size and a version stamp that moves
    whenever they are rewritten (a file's modification time in ns; a zip member's CRC-32, since zip times have a
    2-second resolution). A store records both as `size` / `mtime_ns` and re-hashes a sample whose stamp moved."""

    size: int
    mtime_ns: int
    ctime_ns: int | None = None  # the inode's change time: any write moves it, and `touch` cannot set it back
    inode: int | None = None  # (device, inode): a file replaced by another (mv, cp) gets another


def _file_info(st: os.stat_result) -> FileInfo:
    return FileInfo(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev * 2**40 + st.st_ino)


def _check_size(size: int, max_bytes: int | None, what: str) -> None:
    if max_bytes is not None and size > max_bytes:
        from .decode import DecodeError

        raise DecodeError(f"{what} holds {size / 2**20:,.0f} MiB, more than any image within the pixel budget needs "
                          f"({max_bytes / 2**20:,.0f} MiB): a decompression bomb, or not an image; raise "
                          "--max-image-pixels if it is genuine")  # fmt: skip


class Reader(Protocol):
    """How an index reaches its samples' bytes."""

    def read(self, path: str, max_bytes: int | None = None) -> tuple[bytes, FileInfo]:
        """The sample's bytes and their FileInfo (OSError when unreadable; DecodeError, before reading, when it
        holds more than `max_bytes`)."""

    def info(self, path: str) -> FileInfo | None:
        """Size and mtime without reading (None when the sample is gone)."""

    def identity(self, path: str) -> Any:
        """Equal for two paths that reach the same bytes (links, two spellings); None when gone."""

    def locate(self, path: str) -> str:
        """A locator that stays valid from any working directory (written to the split record)."""

    def name(self, path: str) -> str:
        """The sample as a person reads it in a message."""


@dataclass(frozen=True)
class FolderReader:
    """Samples are files; relative paths are relative to `root`."""

    root: Path

    def path(self, path: str) -> Path:
        return Path(path) if os.path.isabs(path) else self.root / path

    def read(self, path: str, max_bytes: int | None = None) -> tuple[bytes, FileInfo]:
        with open(self.path(path), "rb") as f:
            st = os.fstat(f.fileno())
            _check_size(st.st_size, max_bytes, "the file")
            return f.read(), _file_info(st)

    def info(self, path: str) -> FileInfo | None:
        try:
            st = self.path(path).stat()
        except OSError:
            return None
        return _file_info(st)

    def identity(self, path: str) -> Any:
        try:
            st = os.stat(self.path(path))  # follows symlinks: a link and its target are one file
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def locate(self, path: str) -> str:
        return self.path(path).resolve().as_posix()

    def name(self, path: str) -> str:
        return display(self.path(path))


@dataclass(frozen=True)
class ZipReader:
    """Samples are members of one zip archive; `path` is the member name."""

    archive: Path

    def _info(self, zf: zipfile.ZipFile, path: str) -> FileInfo:
        member = zf.getinfo(path)
        return FileInfo(member.file_size, member.CRC)  # the CRC moves with the bytes; zip times are too coarse

    def read(self, path: str, max_bytes: int | None = None) -> tuple[bytes, FileInfo]:
        try:
            with zipfile.ZipFile(self.archive) as zf:
                info = self._info(zf, path)  # zipfile never inflates past the size the member's header declares
                _check_size(info.size, max_bytes, "the zip member (inflated)")
                return zf.read(path), info
        except (KeyError, zipfile.BadZipFile) as err:
            raise OSError(f"{path} not readable in {self.archive}: {err}") from err

    def info(self, path: str) -> FileInfo | None:
        try:
            with zipfile.ZipFile(self.archive) as zf:
                return self._info(zf, path)
        except (OSError, KeyError, zipfile.BadZipFile):
            return None

    def identity(self, path: str) -> Any:
        return (self.archive.resolve().as_posix(), str(PurePosixPath(path)))

    def locate(self, path: str) -> str:
        return f"{self.archive.resolve().as_posix()}::{path}"

    def name(self, path: str) -> str:
        return f"{display(self.archive)}::{display(path)}"
