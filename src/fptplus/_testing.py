"""Deterministic kill points for the resume tests (inactive unless FPTPLUS_TEST_CRASH is set).

FPTPLUS_TEST_CRASH="preload-written:3" kills the process with SIGKILL right after the 3rd batch's arrays are
written (before its progress record); "preload-committed:N" after the record; "train-step:N" right after the
N-th optimizer step. Real users never set it; it exists so the tests can interrupt at exact points.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "FPTPLUS_TEST_CRASH"


def crash_point(name: str, count: int) -> None:
    spec = os.environ.get(CRASH_ENV)
    if spec and spec == f"{name}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)
