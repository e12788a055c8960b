"""fptplus tune: trials from one store, outputs, resume without repeating trials, a killed trial run again."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import save_file

from fptplus.cli import main
from fptplus.config import RunConfig
from imagegen import class_folders

from conftest import TINY, build_tiny, tiny_config

optuna = pytest.importorskip("optuna")

FLAGS = ["--img-size", "64", "--side-img-size", "32", "--backbone-kwargs", repr(TINY), "--side-depth", "2",
         "--reduction", "2", "--epochs", "2", "--batch-size", "4", "--num-workers", "0",
         "--bootstrap", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    weights = root / "tiny.safetensors"
    save_file(build_tiny(tiny_config()).lpm.vit.state_dict(), weights)
    data = class_folders(root / "data", {"neg": 12, "pos": 12}, size=(48, 48))
    return data, weights


def tune_args(data, weights, out, trials, *extra):
    return ["tune", "--data", str(data), "--weights", str(weights), "--out", str(out), "--trials", str(trials),
            *FLAGS, *extra]  # fmt: skip


def rows(out):
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tune_writes_trials_and_a_trainable_best_config_and_resumes(setup, tmp_path):
    data, weights = setup
    out = tmp_path / "study"
    assert main(tune_args(data, weights, out, 3)) == 0
    first = rows(out)
    assert len(first) == 3 and {r["state"] for r in first} <= {"COMPLETE", "PRUNED"}
    assert len({r["lr"] for r in first}) == 3  # three different points of the space
    assert (out / "store" / "manifest.json").exists() and not (out / "trials" / "trial-0" / "store").exists()
    fingerprint = json.loads((out / "store" / "manifest.json").read_text())["fingerprint"]
    assert fingerprint["token_ratio"] == 0.4 and fingerprint["fused_layers"] == [0, 1]  # the widest searched
    assert {float(r["token_ratio"]) for r in first} <= {0.1, 0.2, 0.4} and all(r["fused_layers"] for r in first)
    logs = " ".join((out / "trials" / f"trial-{i}" / "log.txt").read_text() for i in range(3))
    assert "preload [rank" not in logs  # no trial preloaded: each read its ratio and layers from the one store
    best = RunConfig.load(out / "best" / "config.yaml")
    done = [r for r in first if r["state"] == "COMPLETE"]
    top = max(done, key=lambda r: float(r["val_auc"]))
    assert best.train.lr == pytest.approx(float(top["lr"])) and best.model.num_prompts == int(top["num_prompts"])
    assert (out / "history.png").exists()
    assert main(tune_args(data, weights, out, 3)) == 0  # the study is complete: nothing runs again
    assert rows(out) == first
    assert main(tune_args(data, weights, out, 4)) == 0  # one more trial, the others kept
    assert len(rows(out)) == 4 and rows(out)[:3] == first
    assert rows(out)[3]["lr"] not in {r["lr"] for r in first}  # a continued study draws a new point
    assert main(["train", "--config", str(out / "best" / "config.yaml"), "--out", str(tmp_path / "final")]) == 0


def test_a_killed_trial_is_run_again_and_finished_ones_are_not(setup, tmp_path):
    data, weights = setup
    out = tmp_path / "study"
    env = {**os.environ, "FPTPLUS_TUNE_HEARTBEAT": "1"}
    assert main(tune_args(data, weights, out, 1)) == 0  # trial 0 finishes
    finished = rows(out)
    cmd = [sys.executable, "-m", "fptplus.cli", *tune_args(data, weights, out, 2)]
    proc = subprocess.run(cmd, env={**env, "FPTPLUS_TEST_CRASH": "train-step:3"}, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode != 0  # SIGKILL inside trial 1
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)  # at once: no waiting
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trial 1 was killed; its point is run again" in proc.stdout + proc.stderr
    states = [r["state"] for r in rows(out)]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") + states.count("PRUNED") == 2
    assert "RUNNING" not in states and rows(out)[0] == finished[0]  # trial 0 was not run again
    study = optuna.load_study(study_name="fptplus", storage=f"sqlite:///{out / 'study.db'}")
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == failed.number]
    assert len(retried) == 1 and retried[0].params == failed.params  # the killed point, run again


def test_tune_refuses_another_study_in_the_same_folder(setup, tmp_path):
    data, weights = setup
    out = tmp_path / "study"
    assert main(tune_args(data, weights, out, 1)) == 0
    other = class_folders(tmp_path / "other", {"neg": 12, "pos": 12}, size=(48, 48))
    assert main(tune_args(other, weights, out, 2)) == 2


def test_pruned_trials_stop_early_and_are_recorded(setup, tmp_path, monkeypatch):
    """A pruner that stops every trial after its first epoch: the trainer lets optuna's signal through, each trial
    ends after one epoch, and a study without a finished trial is an error naming trials.csv."""
    data, weights = setup
    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **_: optuna.pruners.ThresholdPruner(lower=2.0))
    out = tmp_path / "study"
    assert main(tune_args(data, weights, out, 2)) == 2
    assert [r["state"] for r in rows(out)] == ["PRUNED", "PRUNED"]
    log = (out / "trials" / "trial-0" / "log.txt").read_text()
    assert "epoch 1/2  train loss" in log and "epoch 2/2" not in log  # stopped after its first epoch


def test_tune_with_folds_scores_each_trial_by_its_cross_validation(setup, tmp_path, monkeypatch):
    """--folds K: every trial is a K-fold CV (one store for all), scored by the mean validation AUC over folds."""
    data, weights = setup
    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **_: optuna.pruners.ThresholdPruner(lower=2.0))
    out = tmp_path / "study"
    assert main(tune_args(data, weights, out, 2, "--folds", "2")) == 0  # a pruner would stop everything: not used
    for r in rows(out):
        trial = out / "trials" / f"trial-{r['number']}"
        vals = [json.loads((trial / f"fold-{f}" / "results.json").read_text())["val"]["auc"] for f in range(2)]
        assert r["state"] == "COMPLETE" and float(r["val_auc"]) == pytest.approx(np.mean(vals), abs=1e-6)
    assert not list(out.glob("trials/*/fold-*/store"))  # every fold of every trial read the study's one store


def test_ctrl_c_is_one_line_and_the_interrupted_point_runs_again(setup, tmp_path):
    import signal
    import time

    data, weights = setup
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "fptplus.cli", *tune_args(data, weights, out, 2, "--epochs", "30")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "trials" / "trial-0" / "metrics.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # trial 0 is training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err
    assert main(tune_args(data, weights, out, 2)) == 0
    study = optuna.load_study(study_name="fptplus", storage=f"sqlite:///{out / 'study.db'}")
    first = study.trials[0]
    assert first.state.name == "FAIL" and first.user_attrs.get("interrupted")
    assert [t.params for t in study.trials if t.user_attrs.get("retry_of") == 0] == [first.params]
