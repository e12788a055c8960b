"""Keeps the calling thread's alternate signal stack across calls into a native library that replaces it.

OpenVINO's CPU plugin (2026.4, measured) installs its own alternate signal stack on the thread that compiles or runs
a model and can unmap that memory later (a compiled model evicted, the engine collected) without putting the old one
back. The thread is then left pointing at unmapped memory — or at whatever is mapped there next (a store shard's
memory map, seen in the test suite) — and the next signal whose handler runs on the alternate stack (Python installs
its handlers with SA_ONSTACK; PyTorch's DataLoader handles SIGCHLD) makes the kernel kill the process with SIGSEGV
(si_code SI_KERNEL: the signal frame could not be written), or writes the frame into that mapping. Hence every
OpenVINO call runs inside `kept_signal_stack()`, which puts the thread's previous stack back afterwards.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

SS_DISABLE = {"linux": 2, "darwin": 4}


class _LinuxStack(ctypes.Structure):  # stack_t on Linux
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


class _DarwinStack(ctypes.Structure):  # stack_t on macOS: size before flags
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_size", ctypes.c_size_t), ("ss_flags", ctypes.c_int)]


@cache
def _platform() -> tuple[object, type[ctypes.Structure], int] | None:
    """(libc, stack_t, SS_DISABLE) where sigaltstack exists; None elsewhere (Windows: nothing to keep)."""
    kind = "linux" if sys.platform.startswith("linux") else "darwin" if sys.platform == "darwin" else None
    if kind is None:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.sigaltstack  # noqa: B018 (the symbol must exist)
    except (OSError, AttributeError):
        return None
    return libc, _LinuxStack if kind == "linux" else _DarwinStack, SS_DISABLE[kind]


def signal_stack() -> tuple[int, int, bool] | None:
    """This thread's alternate signal stack as (address, size, enabled); None where it cannot be read."""
    found = _platform()
    if found is None:
        return None
    libc, stack_t, disable = found
    now = stack_t()
    if libc.sigaltstack(None, ctypes.byref(now)) != 0:
        return None
    return int(now.ss_sp or 0), int(now.ss_size), not now.ss_flags & disable


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Runs the block, then restores this thread's alternate signal stack if the block replaced it."""
    before = signal_stack()
    try:
        yield
    finally:
        if before is not None and signal_stack() != before:
            libc, stack_t, disable = _platform()  # type: ignore[misc]
            sp, size, enabled = before
            old = stack_t(ss_sp=sp or None, ss_size=size, ss_flags=0 if enabled else disable)
            libc.sigaltstack(ctypes.byref(old), None)
