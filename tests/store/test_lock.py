"""One writer per store: the holder is named, a waiting writer reuses the finished store, a killed writer's
store is taken over and resumed, concurrent writers end with the single writer's bytes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fptplus.data.sources import load_index
from fptplus.store import FeatureStore, StoreError
from fptplus.store import lock as lock_mod
from fptplus.store.lock import LOCK_FILE, StoreLock
from imagegen import class_folders
from preload_script import run_preload
from storetools import build, quiet, tiny_weights, tree

from conftest import TINY


@pytest.fixture
def data(tmp_path):
    return class_folders(tmp_path / "data", {"neg": 6, "pos": 6})


def test_a_second_writer_is_refused_naming_the_holder(data, tmp_path):
    index, out = load_index(data, seed=0), tmp_path / "store"
    with StoreLock(out, log=quiet):  # another open file description: conflicts even within this process
        with pytest.raises(StoreError, match=rf"being written by PID {os.getpid()} on .* \(since .*\); wait"):
            build(index, out, lock_wait=0)
        with pytest.raises(StoreError, match="being written by"):
            build(index, out, lock_wait=0.3)
    assert (out / LOCK_FILE).read_bytes() == b""  # a clean release clears the holder record
    assert build(index, out).processed == 12


def test_a_waiting_writer_reuses_the_finished_store(data, tmp_path):
    index, out, ref = load_index(data, seed=0), tmp_path / "store", tmp_path / "ref"
    build(index, ref)
    holder = StoreLock(out, log=quiet)
    holder.acquire()
    lines, reports = [], []
    waiter = threading.Thread(target=lambda: reports.append(build(index, out, log=lines.append)))
    waiter.start()
    deadline = time.time() + 30
    while not lines and time.time() < deadline:
        time.sleep(0.05)
    assert lines and "is being written by" in lines[0] and "waiting" in lines[0]
    assert not (out / "plan.json").exists()  # nothing written while waiting
    holder.release()
    waiter.join(timeout=120)
    assert reports and reports[0].complete and tree(out) == tree(ref)


def test_a_killed_writer_is_taken_over_and_resumed(data, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    build(load_index(data, seed=0), ref, batch_size=2, shard_mb=60_000 / 2**20)
    proc = run_preload(data, out, tiny_weights(), 60_000, crash="preload-committed:2")
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    assert f'"pid": {proc.pid}' in (out / LOCK_FILE).read_text()  # the dead holder's record is still there
    lines = []
    report = build(load_index(data, seed=0), out, batch_size=2, shard_mb=60_000 / 2**20, log=lines.append)
    assert any(f"PID {proc.pid}" in line and "stopped without finishing" in line for line in lines)
    assert 0 < report.processed < 12 and tree(out) == tree(ref)


def test_filesystems_without_locks_are_refused_unless_locking_is_off(data, tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock_mod.fcntl, "flock", no_flock)
    index = load_index(data, seed=0)
    with pytest.raises(StoreError, match=r"does not support file locks .* FPTPLUS_STORE_LOCK=off"):
        build(index, tmp_path / "store")
    monkeypatch.setenv("FPTPLUS_STORE_LOCK", "off")
    assert build(index, tmp_path / "store").complete


@pytest.mark.parametrize("trial", range(2))
def test_two_concurrent_preloads_end_with_the_single_writers_bytes(data, tmp_path, trial):
    ref, out = tmp_path / "ref", tmp_path / "out"
    build(load_index(data, seed=0), ref, batch_size=2, shard_mb=60_000 / 2**20)
    procs = [run_preload(data, out, tiny_weights(), 60_000, stdout=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert tree(out) == tree(ref)
    said = "".join(o for o, _ in outputs)
    assert "nothing to do" in said  # exactly one of them built it; the other reused the finished store
    assert FeatureStore(out).verify(load_index(data, seed=0), log=quiet) == []


def test_two_trainings_sharing_one_store_build_it_once(data, tmp_path):
    """The README's seeds / lr sweep: two `fptplus train` runs started together with the same --store."""
    weights = tiny_weights()
    common = ["--data", str(data), "--weights", str(weights), "--epochs", "1", "--batch-size", "4",
              "--num-workers", "0", "--bootstrap", "0", "--backbone-kwargs", repr(TINY), "--img-size", "64",
              "--side-img-size", "32", "--side-depth", "2", "--reduction", "2", "--num-prompts", "4",
              "--store", str(tmp_path / "shared")]  # fmt: skip
    cli = [sys.executable, "-m", "fptplus.cli", "train"]
    runs = [[*cli, "--out", str(tmp_path / f"run{i}"), *common, "--lr", lr] for i, lr in enumerate(("1e-3", "2e-3"))]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in runs]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    logs = [(tmp_path / f"run{i}" / "log.txt").read_text() for i in range(2)]
    assert sum("nothing to do" in log for log in logs) == 1
    store = FeatureStore(tmp_path / "shared")
    assert store.verify(load_index(data, seed=0), log=quiet) == [] and len(store.usable()) == 12
