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


def tiny_weights(folder):
    """FOLDER/tiny.safetensors: the tiny random ViT's weights as a --weights file."""
    from safetensors.torch import save_file

    from conftest import build_tiny, tiny_config

    path = folder / "tiny.safetensors"
    save_file(build_tiny(tiny_config()).lpm.vit.state_dict(), path)
    return path


def tiny_data(folder):
    """FOLDER/data: 12 + 12 random 48 px images in class folders."""
    from imagegen import class_folders

    return class_folders(folder / "data", {"neg": 12, "pos": 12}, size=(48, 48))


def trained_tiny_run(root):
    """A tiny FPT+ run (ROOT/run) on 48 px images where 'pos' is bright and 'neg' dark (ROOT/data, a CSV with an
    explicit split), except two bright test images labelled 'neg': a model that learnt brightness makes false
    positives there, as a split browser needs."""
    import numpy as np

    from fptplus.cli import main
    from imagegen import save, write_csv

    weights = tiny_weights(root)
    rng = np.random.default_rng(0)
    rows = []
    for label, bright in (("neg", False), ("pos", True)):
        for i, split in enumerate(["train"] * 16 + ["val"] * 4 + ["test"] * 4):
            lit = bright or (split == "test" and i >= 22)  # two mislabelled bright 'neg' test images
            low = 200 if lit and not bright else 120  # the mislabelled ones brighter than any positive
            img = rng.integers(low, 255, (48, 48, 3)) if lit else rng.integers(0, 110, (48, 48, 3))
            save(root / "data" / label / f"img{i}.png", img.astype(np.uint8))
            rows.append({"path": f"{label}/img{i}.png", "label": label, "split": split})
    data = write_csv(root / "data" / "labels.csv", rows, ["path", "label", "split"])
    assert main(train_args(data, root / "run", weights, "--epochs", "4", "--lr", "0.01")) == 0
    return root / "run"
