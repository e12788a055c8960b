"""`kept_signal_stack` puts the thread's alternate signal stack back whatever the block did to it (OpenVINO's CPU
plugin replaces it and later unmaps its own: the suite's segfault of issue 29)."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading

import pytest

from fptplus import sigstack
from fptplus.sigstack import kept_signal_stack, signal_stack

pytestmark = pytest.mark.skipif(signal_stack() is None, reason="no sigaltstack on this platform")


def _install(buf) -> None:
    libc, stack_t, _ = sigstack._platform()
    new = stack_t(ss_sp=ctypes.addressof(buf), ss_size=len(buf), ss_flags=0)
    assert libc.sigaltstack(ctypes.byref(new), None) == 0


def _disable() -> None:
    libc, stack_t, disable = sigstack._platform()
    assert libc.sigaltstack(ctypes.byref(stack_t(ss_sp=None, ss_size=0, ss_flags=disable)), None) == 0


def _in_a_thread(fn):
    """Runs fn in a fresh thread (its own signal stack state, so the test never touches pytest's)."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(result=fn()))
    t.start()
    t.join()
    return out["result"]


def test_a_replaced_stack_is_put_back():
    def body():
        first, second = ctypes.create_string_buffer(65536), ctypes.create_string_buffer(65536)
        _install(first)
        before = signal_stack()
        assert before == (ctypes.addressof(first), 65536, True)
        with kept_signal_stack():
            _install(second)  # what the native call did
            assert signal_stack()[0] == ctypes.addressof(second)
        return before, signal_stack()

    before, after = _in_a_thread(body)
    assert after == before


def test_a_disabled_stack_stays_disabled_and_an_untouched_one_is_left_alone():
    def body():
        _disable()
        before = signal_stack()
        buf = ctypes.create_string_buffer(65536)
        with kept_signal_stack():
            _install(buf)
        restored = signal_stack()
        _install(buf)
        mine = signal_stack()
        with kept_signal_stack():
            pass
        untouched = signal_stack()
        _disable()
        return before, restored, mine, untouched

    before, restored, mine, untouched = _in_a_thread(body)
    assert before[2] is False and restored[2] is False
    assert untouched == mine and mine[2] is True


def test_the_stack_is_put_back_when_the_block_raises():
    def body():
        buf = ctypes.create_string_buffer(65536)
        before = signal_stack()
        with pytest.raises(RuntimeError), kept_signal_stack():
            _install(buf)
            raise RuntimeError("native call failed")
        return before, signal_stack()

    before, after = _in_a_thread(body)
    assert after == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child maps memory with Linux's flags")
def test_a_signal_after_a_freed_stack_kills_the_process_and_kept_signal_stack_prevents_it():
    """The failure itself, in a child process: a Python signal handler (SA_ONSTACK) on a thread whose alternate stack
    was unmapped kills the process with SIGSEGV; the same native call inside kept_signal_stack is harmless."""
    child = """
import ctypes, os, signal, sys
from ctypes import byref, c_int, c_long, c_size_t, c_void_p
from fptplus import sigstack
libc, stack_t, _ = sigstack._platform()
libc.mmap.restype, libc.mmap.argtypes = c_void_p, [c_void_p, c_size_t, c_int, c_int, c_int, c_long]
libc.munmap.argtypes = [c_void_p, c_size_t]
signal.signal(signal.SIGUSR1, lambda *a: None)
def native_call():  # installs a stack of its own and keeps no record of the old one
    addr = libc.mmap(None, 65536, 3, 0x22, -1, 0)  # read|write, private|anonymous
    libc.sigaltstack(byref(stack_t(ss_sp=addr, ss_size=65536, ss_flags=0)), None)
    return addr
if sys.argv[1] == "kept":
    with sigstack.kept_signal_stack():
        addr = native_call()
else:
    addr = native_call()
libc.munmap(addr, 65536)  # ... and frees it later
os.kill(os.getpid(), signal.SIGUSR1)
print("survived")
"""
    bare = subprocess.run([sys.executable, "-c", child, "bare"], capture_output=True, text=True, timeout=60)
    kept = subprocess.run([sys.executable, "-c", child, "kept"], capture_output=True, text=True, timeout=60)
    assert kept.returncode == 0 and "survived" in kept.stdout, kept.stderr
    assert bare.returncode == -signal.SIGSEGV, (bare.returncode, bare.stderr)
