"""A run folder's life: nothing written before the checks pass, a failed attempt never blocks its retry, the same
command continues an interrupted run, and a live run is never touched by a second command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fptplus._testing import CRASH_ENV
from fptplus.cli import main
from fptplus.trainer.runfolder import RunLock
from imagegen import class_folders, write_csv
from runhelp import tiny_weights, train_args


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("life")
    return root, class_folders(root / "data", {"neg": 8, "pos": 8}, size=(48, 48)), tiny_weights(root)


def test_the_commonest_mistakes_write_nothing_and_the_fixed_command_just_works(setup, tmp_path, capsys):
    _, data, weights = setup
    out = tmp_path / "mine"
    assert main(train_args(tmp_path / "no-such-folder", out, weights)) == 2  # wrong --data
    dup = tmp_path / "dup"
    shutil.copytree(data, dup)
    shutil.copy(dup / "neg" / "img0.png", dup / "pos" / "copy.png")  # the same image under two labels
    assert main(train_args(dup, out, weights)) == 2
    rows = [{"path": f"{c}/img{i}.png", "label": c} for c in ("neg", "pos") for i in range(8)]
    rows.append({"path": "neg/missing.png", "label": "neg"})
    manifest = write_csv(data.parent / "labels-missing.csv", rows, ["path", "label"])
    assert main(train_args(manifest, out, weights)) == 2  # a CSV naming a file that is not there
    assert not out.exists()  # none of the three wrote anything
    err = capsys.readouterr().err
    assert "--overwrite" not in err
    assert main(train_args(data, out, weights, "--epochs", "1")) == 0  # the corrected command, no flag
    assert (out / "results.json").exists()


def test_the_same_command_continues_an_interrupted_run(setup, tmp_path):
    _, data, weights = setup
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fptplus.cli", *train_args(data, out, weights, "--epochs", "2")]
    killed = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, CRASH_ENV: "train-step:5"},
                            timeout=300)  # fmt: skip
    assert killed.returncode < 0 and (out / "checkpoints" / "last").exists() and not (out / "results.json").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "continuing the interrupted run (same configuration and seeds)" in again.stdout + again.stderr
    reference = tmp_path / "reference"
    assert main(train_args(data, reference, weights, "--epochs", "2")) == 0
    a, b = (json.loads((r / "results.json").read_text())["test"] for r in (out, reference))
    assert a["auc"] == b["auc"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)  # as if never interrupted
    other = subprocess.run([*cmd, "--lr", "0.01"], capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "already holds a finished run" in other.stderr


def test_a_live_run_is_refused_by_name_even_with_overwrite_or_resume(setup, tmp_path, capsys):
    _, data, weights = setup
    out = tmp_path / "live"
    assert main(train_args(data, out, weights, "--epochs", "1")) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with RunLock(out):  # as if another process were training it right now
        for extra in ([], ["--overwrite"]):
            assert main(train_args(data, out, weights, *extra)) == 2
            assert f"is being trained right now by PID {os.getpid()}" in capsys.readouterr().err
        assert main(["train", "--resume", str(out)]) == 2
        assert "is being trained right now" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # untouched
    assert main(train_args(data, out, weights, "--overwrite", "--epochs", "1")) == 0  # once it has stopped


def test_a_shared_store_names_the_runs_that_read_it_before_it_is_rebuilt(setup, tmp_path, capsys):
    _, data, weights = setup
    store = tmp_path / "shared-store"
    assert main(train_args(data, tmp_path / "a", weights, "--epochs", "1", "--store", str(store))) == 0
    capsys.readouterr()
    args = ["preload", "--data", str(data), "--out", str(store), "--weights", str(weights), "--img-size", "64",
            "--side-img-size", "32", "--backbone-kwargs", "{'depth': 2, 'embed_dim': 32, 'num_heads': 4}",
            "--side-depth", "2", "--token-ratio", "0.5", "--num-workers", "0"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 run(s) read this store" in err and str((tmp_path / "a").resolve()) in err
    assert "preload into another --out" in err
