"""`fptplus train --folds K`: one store, K complete fold runs, out-of-fold predictions, resume, refusals."""

from __future__ import annotations

import csv
import json
import signal

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fptplus.cli import main
from fptplus.data.folds import assign_folds
from fptplus.data.sources import load_index
from runhelp import run_cli, tiny_data, tiny_weights, train_args


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights(tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("d"))


def test_three_folds_share_one_store_and_predict_every_image_once(data, weights, tmp_path, capsys):
    run = tmp_path / "cv"
    assert main(train_args(data, run, weights, "--folds", "3", "--epochs", "2")) == 0
    assert json.loads((run / "run.json").read_text())["folds"] == 3
    assert sorted(p.name for p in run.glob("fold-*")) == ["fold-0", "fold-1", "fold-2"]
    assert (run / "store" / "manifest.json").exists() and not list(run.glob("fold-*/store"))
    index = load_index(data)
    folds = assign_folds(index.samples, 3, seed=0)
    tests = sorted(s.path for s in index.samples if s.split == "test")
    for f in range(3):
        fold = run / f"fold-{f}"
        assert json.loads((fold / "run.json").read_text())["store"] == str((run / "store").resolve())
        with open(fold / "splits.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        val = {r["path"] for r in rows if r["split"] == "val"}
        assert val == {str(data / s.path) for s, k in zip(index.samples, folds, strict=True) if k == f}
        assert sorted(r["path"] for r in rows if r["split"] == "test") == sorted(str(data / p) for p in tests)
    with open(run / "oof_predictions.csv", newline="") as fh:
        oof = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in oof) == sorted(s.path for s in index.samples if s.split != "test")
    summary = json.loads((run / "summary.json").read_text())
    y = [r["label"] == "pos" for r in oof]
    assert summary["oof"]["auc"] == pytest.approx(roc_auc_score(y, [float(r["p_pos"]) for r in oof]), abs=1e-6)
    per_fold = [json.loads((run / f"fold-{f}" / "results.json").read_text()) for f in range(3)]
    aucs = [r["test"]["auc"] for r in per_fold]
    assert summary["test"]["auc"]["values"] == aucs
    assert summary["test"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert summary["test"]["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    test_probs = []
    for f in range(3):
        with open(run / f"fold-{f}" / "predictions_test.csv", newline="") as fh:
            test_probs.append([float(r["p_pos"]) for r in csv.DictReader(fh)])
    with open(run / "fold-0" / "predictions_test.csv", newline="") as fh:
        test_y = [r["label"] == "pos" for r in csv.DictReader(fh)]
    ensemble = roc_auc_score(test_y, np.mean(test_probs, axis=0))
    assert summary["test_ensemble"]["auc"] == pytest.approx(ensemble, abs=1e-5)
    md = (run / "summary.md").read_text()
    assert "3-fold cross-validation" in md and "out-of-fold" in md
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    assert "3-fold cross-validation: pass one fold's run" in capsys.readouterr().err
    assert main(["evaluate", str(run / "fold-1"), "--split", "val"]) == 0
    assert json.loads((run / "fold-1" / "eval-val-best.json").read_text())["auc"] == pytest.approx(
        per_fold[1]["val"]["auc"], abs=1e-6
    )


def test_killed_cross_validation_resumes_to_the_same_summary(data, weights, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = lambda out: train_args(data, out, weights, "--folds", "2", "--epochs", "2", "--seeds", "0,1")  # noqa: E731
    assert run_cli(args(ref)).returncode == 0
    killed = run_cli(args(run), crash="train-step:5")  # inside fold 0, seed 0, epoch 2
    assert killed.returncode == -signal.SIGKILL and not (run / "summary.json").exists()
    resumed = run_cli(["train", "--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (json.loads((r / "summary.json").read_text()) for r in (ref, run))
    for key in ("test", "val", "oof", "test_ensemble"):
        assert a[key] == b[key], key
    assert (ref / "oof_predictions.csv").read_text() == (run / "oof_predictions.csv").read_text()
    again = run_cli(["train", "--resume", str(run)])  # all finished: nothing retrained
    assert again.returncode == 0 and again.stdout.count("finished earlier") == 4


def test_one_fold_alone_and_refusals(data, weights, tmp_path, capsys):
    one = tmp_path / "one"
    assert main(train_args(data, one, weights, "--folds", "3", "--fold", "2", "--epochs", "1")) == 0
    index = load_index(data)
    folds = assign_folds(index.samples, 3, seed=0)
    with open(one / "splits.csv", newline="") as fh:
        val = {r["path"] for r in csv.DictReader(fh) if r["split"] == "val"}
    assert val == {str(data / s.path) for s, k in zip(index.samples, folds, strict=True) if k == 2}
    capsys.readouterr()
    assert main(train_args(data, tmp_path / "r2", weights, "--folds", "11")) == 2
    assert "use fewer folds" in capsys.readouterr().err
    assert main(train_args(data, tmp_path / "r3", weights, "--fold", "1")) == 2
    assert "given with --folds" in capsys.readouterr().err
