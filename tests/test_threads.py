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


def test_cheap_decoding_moves_here_and_gives_the_pass_every_core():
    # mini-MIAS at 1022 px: PGM decoding 0.05 s, the pass 3 s on both cores (6 s on one beside a worker)
    placed = threads.place_decoding(0.05, 3.0, cores=2, workers=1)
    assert (placed.threads, placed.workers) == (2, 0)
    assert "3.05" in placed.why and "6.00" in placed.why  # both estimates, the chosen first


def test_expensive_decoding_stays_in_workers():
    # 12-megapixel JPEGs to a 224 px pass: decoding 0.4 s, the pass 0.05 s on both cores
    placed = threads.place_decoding(0.4, 0.05, cores=2, workers=1)
    assert (placed.threads, placed.workers) == (1, 1)  # max(0.1, 0.4) = 0.4 < 0.45
    placed = threads.place_decoding(0.4, 0.05, cores=16, workers=4)
    assert (placed.threads, placed.workers) == (12, 4)  # max(0.067, 0.1) < 0.45


def test_the_estimates_break_even_where_the_formulas_say():
    # with workers: max(p · c / (c − w), d / w); here: p + d. c 4, w 1, p 0.3: 0.4 vs 0.3 + d → here iff d < 0.1
    assert threads.place_decoding(0.099, 0.3, cores=4, workers=1).workers == 0
    assert threads.place_decoding(0.101, 0.3, cores=4, workers=1).workers == 1
    # more workers than cores: the pass keeps one thread
    assert threads.place_decoding(5.0, 0.1, cores=2, workers=4).threads == 1
