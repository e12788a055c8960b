"""Thread choice: the cores of this process's affinity, minus decoding workers; explicit and torch-default settings."""

from __future__ import annotations

import os

import torch

from fptplus import threads


def test_auto_counts_the_affinity_and_the_decoding_workers(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    assert threads.choose_threads(None, 0)[0] == 4
    assert threads.choose_threads(None, 2)[0] == 2
    assert threads.choose_threads(None, 8)[0] == 1  # never below one
    assert threads.choose_threads(3, 2)[0] == 3  # --threads N wins
    assert threads.choose_threads(0, 2)[0] == torch.get_num_threads()  # torch's default, untouched


def test_apply_sets_torch_and_says_why(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    lines = []
    try:
        assert threads.apply_threads(None, 1, lines.append) == 1 and torch.get_num_threads() == 1
        assert "2 cores available" in lines[0] and "1 of them left to data-loader workers" in lines[0]
    finally:
        torch.set_num_threads(before)


def test_idle_openmp_threads_sleep_unless_the_user_says_otherwise():
    import subprocess
    import sys

    code = "import os, fptplus; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert out.stdout.strip() == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.strip() == "ACTIVE"
    )
