"""One writer per store: an exclusive advisory lock (`flock`) on STORE/writer.lock while a store is written.

The kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a lock left by a killed
process is never "stale": the next writer simply gets it, sees the holder's record in the file, says that it is
taking over, and resumes the store. While the lock is held, the file names the holder (PID, host, start time),
so a second writer can say who it is waiting for. Readers of a complete store take no lock.

Filesystems without `flock` (some network or FUSE mounts) are refused with the fix, since a store written by
two processes at once is silently corrupt; `FPTPLUS_STORE_LOCK=off` skips locking for users who guarantee a
single writer themselves.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..files import display
from ..logs import get_logger, info_of
from .format import StoreError

_log = get_logger("store")


try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "writer.lock"
LOCK_ENV = "FPTPLUS_STORE_LOCK"
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def holder_text(record: dict[str, Any] | None) -> str:
    if not record:
        return "another process"
    return f"PID {record.get('pid', '?')} on {record.get('host', '?')} (since {record.get('since', '?')})"


def read_lock_record(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        record = json.loads(data.decode("utf-8")) if data.strip() else None
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def write_lock_record(fd: int) -> None:
    """Names this process as the holder (PID, host, start time) in a held lock file."""
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)


class StoreLock:
    """Context manager holding the store's writer lock.

    Args:
        store: the store folder (created if missing).
        wait: seconds to wait for another writer (None: as long as it takes; 0: refuse at once).
        log: where the waiting / take-over lines go.
    """

    def __init__(self, store: str | Path, wait: float | None = None, log: Callable[[str], None] | None = None) -> None:
        self.store, self.wait, self.log = Path(store), wait, info_of(_log, log)
        self.path = self.store / LOCK_FILE
        self.fd: int | None = None
        self.previous: dict[str, Any] | None = None  # the record of a holder that stopped without releasing

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        if os.environ.get(LOCK_ENV, "").lower() == "off":
            return
        if fcntl is None:
            raise StoreError(f"cannot lock store {display(self.store)}: this platform has no flock; "
                             f"set {LOCK_ENV}=off if you are sure a single process writes it")  # fmt: skip
        self.store.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.previous = read_lock_record(fd)
        if self.previous:
            self.log(f"store {display(self.store)}: the previous writer, {holder_text(self.previous)}, stopped "
                     "without finishing (killed or crashed); taking over and resuming")  # fmt: skip
        write_lock_record(fd)

    def _lock(self, fd: int) -> None:
        deadline = None if self.wait is None else time.monotonic() + self.wait
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as err:
                if err.errno in UNSUPPORTED:
                    raise StoreError(
                        f"cannot lock store {display(self.store)}: its filesystem does not support file locks "
                        f"({os.strerror(err.errno)}). Preload onto a local disk, or set {LOCK_ENV}=off if you "
                        "are sure a single process writes this store"
                    ) from None
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            holder = holder_text(read_lock_record(fd))
            if deadline is not None and time.monotonic() >= deadline:
                raise StoreError(
                    f"store {display(self.store)} is being written by {holder}; wait for it to finish and rerun "
                    "(the finished store is then reused), or choose another store folder"
                )
            if not announced:
                self.log(f"store {display(self.store)} is being written by {holder}; waiting for it to finish "
                         "(Ctrl-C to stop)")  # fmt: skip
                announced = True
            time.sleep(0.2)

    def release(self) -> None:
        """Clears the holder record (a clean exit), then drops the lock."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
            os.fsync(self.fd)
        finally:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None
