"""Multi-label runs: BCE per label, per-label AUC as scikit-learn computes it, every method, predict per label."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fptplus.cli import main
from fptplus.methods import available_methods, get_method
from fptplus.trainer.objective import bits, make_objective
from imagegen import multilabel_csv
from runhelp import tiny_weights, train_args

from conftest import TINY

LABELS = ["A", "B", "C"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights(tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return multilabel_csv(tmp_path_factory.mktemp("ml"))


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def targets_and_probs(rows):
    y = np.array([[c in r["label"].split(";") for c in LABELS] for r in rows], dtype=int)
    p = np.array([[float(r[f"p_{c}"]) for c in LABELS] for r in rows])
    return y, p


def bce(y, p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_fpt_plus_multilabel_from_the_store_matches_sklearn_and_predict(data, weights, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--label-columns", "A,B,C", "--epochs", "2")) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["source"] == "store" and results["classes"] == LABELS and results["calibration"] is None
    for split in ("val", "test"):
        y, p = targets_and_probs(read_rows(run / f"predictions_{split}.csv"))
        assert len(y) == 8 and y.sum(0).tolist() == [4, 4, 4]  # every combination once
        per_label = [roc_auc_score(y[:, j], p[:, j]) for j in range(3)]
        got = results[split]
        assert got["per_label_auc"] == pytest.approx(per_label, abs=1e-6)
        assert got["auc"] == pytest.approx(np.mean(per_label), abs=1e-6)
        assert got["loss"] == pytest.approx(bce(y, p), abs=1e-4)  # binary cross-entropy, not softmax CE
        assert got["subset_accuracy"] == pytest.approx(((p >= 0.5) == y).all(1).mean())
    assert (run / "roc_test.png").exists() and not (run / "confusion_test.png").exists()
    header = (run / "splits.csv").read_text().splitlines()[0]
    assert header == "path,A,B,C,split,group"  # reloadable: --data RUN/splits.csv --label-columns A,B,C
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    ev = json.loads((run / "eval-test-best.json").read_text())
    assert ev["auc"] == pytest.approx(results["test"]["auc"], abs=1e-6)
    test_rows = read_rows(run / "predictions_test.csv")
    images = [str(data.parent / r["path"]) for r in test_rows]
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), *images, "--out", str(out), "--num-workers", "0"]) == 0
    pred = read_rows(out)
    assert list(pred[0]) == ["path", "prediction", "prob_A", "prob_B", "prob_C"]
    _, stored = targets_and_probs(test_rows)
    online = np.array([[float(r[f"prob_{c}"]) for c in LABELS] for r in pred])
    np.testing.assert_allclose(online, stored, atol=2e-4)  # LPM online vs the store: the same sigmoids
    for r, p in zip(pred, online, strict=True):
        assert r["prediction"] == ";".join(c for c, v in zip(LABELS, p, strict=True) if v >= 0.5)
    assert main(["predict", str(run), images[0], "--calibrated"]) == 2
    assert "is multi-label" in capsys.readouterr().err
    assert main(["explain", str(run), images[0], "--out", str(tmp_path / "ex")]) == 0
    info = json.loads(next((tmp_path / "ex").glob("*.json")).read_text())
    assert info["probabilities"] == pytest.approx(
        {c: float(v) for c, v in zip(LABELS, online[0], strict=True)}, abs=2e-4
    )
    assert info["prediction"] == pred[0]["prediction"]


def test_multilabel_cross_validation(data, weights, tmp_path):
    run = tmp_path / "cv"
    assert main(train_args(data, run, weights, "--label-columns", "A,B,C", "--folds", "2", "--epochs", "1")) == 0
    oof = read_rows(run / "oof_predictions.csv")
    assert len(oof) == 32  # train + val
    y, p = targets_and_probs(oof)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["oof"]["auc"] == pytest.approx(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(3)]))
    assert summary["oof"]["loss"] == pytest.approx(bce(y, p), abs=1e-4)


@pytest.mark.parametrize("method", [m for m in available_methods() if m != "fpt_plus"])
def test_every_method_trains_multilabel(method, data, weights, tmp_path):
    run = tmp_path / method
    args = ["train", "--method", method, "--data", str(data), "--out", str(run), "--weights", str(weights),
            "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--bootstrap", "0", "--img-size", "64",
            "--backbone-kwargs", repr(TINY), "--label-columns", "A,B,C"]  # fmt: skip
    if get_method(method).fitter is None:  # the probes weigh every image equally (they refuse class weights)
        args += ["--class-weights", "balanced"]
    if method == "fpt":
        args += ["--side-img-size", "32", "--side-depth", "2", "--reduction", "2"]
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    y, p = targets_and_probs(read_rows(run / "predictions_test.csv"))
    assert results["test"]["auc"] == pytest.approx(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(3)]))
    # kNN's vote shares reach 1 − 1e-6, which the CSV's 6 significant digits round to 0.999999 (1 − p off by 1 %)
    assert results["test"]["loss"] == pytest.approx(bce(y, p), abs=1e-4 if method != "knn" else 0.05)


def test_objective_bce_with_balanced_positive_weights():
    masks = [0b001, 0b011, 0b000, 0b001, 0b101, 0b000]  # A in 4/6, B in 1/6, C in 1/6
    obj = make_objective("balanced", masks, 3, multilabel=True)
    np.testing.assert_allclose(obj.weight.numpy(), [2 / 4, 5 / 1, 5 / 1])
    logits = torch.randn(6, 3)
    y = torch.tensor(masks)
    target = torch.tensor([[(m >> j) & 1 for j in range(3)] for m in masks], dtype=torch.float32)
    assert torch.equal(bits(y, 3), target)
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([0.5, 5.0, 5.0]))(logits, target)
    torch.testing.assert_close(obj.loss(logits, y), ref)
    torch.testing.assert_close(obj.probs(logits), logits.sigmoid())
