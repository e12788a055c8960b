"""Training command lines on tiny ViTs, shared by the trainer tests."""

from __future__ import annotations

import os
import subprocess
import sys

from fptplus._testing import CRASH_ENV

from conftest import TINY

MODEL_FLAGS = ["--img-size", "64", "--side-img-size", "32", "--backbone-kwargs", repr(TINY), "--side-depth", "2",
               "--reduction", "2", "--num-prompts", "4"]  # fmt: skip


def train_args(data, out, weights, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--weights", str(weights), "--epochs", "3",
            "--batch-size", "4", "--num-workers", "0", "--bootstrap", "100", *MODEL_FLAGS, *extra]  # fmt: skip


def run_cli(args, crash=None):
    """`python -m fptplus.cli ARGS` in a subprocess (optionally killed at a crash point)."""
    env = {**os.environ, **({CRASH_ENV: crash} if crash else {})}
    return subprocess.run([sys.executable, "-m", "fptplus.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
