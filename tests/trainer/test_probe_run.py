"""Probe runs end to end (tiny ViT): stored vs online features, the chosen fit against scikit-learn on the same
features, a run folder that evaluate / predict / compare read, patient-grouped inner folds, refused stores."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from fptplus.cli import main
from fptplus.data.sources import load_index
from fptplus.store import FeatureStore
from fptplus.trainer.probe import inner_folds
from imagegen import save, write_csv
from runhelp import tiny_weights

from conftest import TINY

COMMON = ["--img-size", "64", "--backbone-kwargs", repr(TINY), "--num-workers", "0", "--bootstrap", "100"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """60 images of 20 patients (3 each), brightness loosely tied to the label, a CSV with groups and splits."""
    root = tmp_path_factory.mktemp("probe")
    weights = tiny_weights(root)
    rng = np.random.default_rng(0)
    rows = []
    for patient in range(20):
        label = "pos" if patient % 2 else "neg"
        split = "test" if patient >= 16 else "val" if patient >= 13 else "train"
        for j in range(3):
            level = rng.integers(60, 200) + (25 if label == "pos" else -25)
            img = np.clip(rng.normal(level, 40, (48, 48, 3)), 0, 255).astype(np.uint8)
            path = f"{label}/p{patient}_{j}.png"
            save(root / "data" / path, img)
            rows.append({"path": path, "label": label, "split": split, "group": f"patient{patient}"})
    data = write_csv(root / "data" / "labels.csv", rows, ["path", "label", "split", "group"])
    return root, data, weights


def train(setup, method, out, *extra):
    root, data, weights = setup
    args = ["train", "--method", method, "--data", str(data), "--out", str(root / out), "--weights", str(weights),
            *COMMON, *extra]  # fmt: skip
    assert main(args) == 0
    return root / out


def predictions(path):
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {r["path"]: np.array([float(r["p_neg"]), float(r["p_pos"])]) for r in rows}


def stored_features(store, index, ids):
    return np.stack([np.concatenate([store.features(i)["cls"].double().numpy(),
                                     store.features(i)["patch_mean"].double().numpy()]) for i in ids])  # fmt: skip


def test_linear_probe_equals_scikit_learn_on_the_stored_features(setup):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    run = train(setup, "linear", "linear", "--store-dtype", "float32")
    results = json.loads((run / "results.json").read_text())
    probe = results["probe"]
    assert results["source"] == "store" and probe["fit_images"] == 48 and probe["cv_folds"] == 5
    assert probe["converged"] and 4 <= len(probe["grid"]) <= 11 and probe["C"] in [g["value"] for g in probe["grid"]]
    store = FeatureStore(run / "store")
    index = load_index(setup[1], seed=0)
    fit = [i for i, s in enumerate(index.samples) if s.split != "test"]
    test = [i for i, s in enumerate(index.samples) if s.split == "test"]
    y = np.array([index.samples[i].label for i in fit])
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=probe["C"], tol=1e-12, max_iter=100_000))
    want = pipe.fit(stored_features(store, index, fit), y).predict_proba(stored_features(store, index, test))
    got = predictions(run / "predictions_test.csv")
    for i, w in zip(test, want, strict=True):
        np.testing.assert_allclose(got[index.samples[i].path], w, atol=1e-4)
    from sklearn.metrics import roc_auc_score

    assert results["test"]["auc"] == pytest.approx(roc_auc_score([index.samples[i].label for i in test], want[:, 1]))


def test_knn_probe_equals_scikit_learn_on_the_stored_features(setup):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    run = train(setup, "knn", "knn", "--store-dtype", "float32")
    probe = json.loads((run / "results.json").read_text())["probe"]
    store = FeatureStore(run / "store")
    index = load_index(setup[1], seed=0)
    fit = [i for i, s in enumerate(index.samples) if s.split != "test"]
    test = [i for i, s in enumerate(index.samples) if s.split == "test"]
    scaler = StandardScaler().fit(stored_features(store, index, fit))
    knn = KNeighborsClassifier(n_neighbors=probe["k"], metric="cosine", algorithm="brute")
    knn.fit(scaler.transform(stored_features(store, index, fit)), [index.samples[i].label for i in fit])
    want = knn.predict_proba(scaler.transform(stored_features(store, index, test)))
    got = predictions(run / "predictions_test.csv")
    for i, w in zip(test, want, strict=True):
        np.testing.assert_allclose(got[index.samples[i].path], w, atol=1e-4)


def test_store_and_online_features_give_the_same_probe_and_the_run_folder_serves_every_command(setup, capsys):
    root = setup[0]
    stored = train(setup, "linear", "lin-store", "--store-dtype", "float32")
    online = train(setup, "linear", "lin-online", "--no-preload")
    a, b = (json.loads((r / "results.json").read_text()) for r in (stored, online))
    assert b["source"] == "online" and not (online / "store").exists()
    assert a["probe"]["C"] == b["probe"]["C"]
    assert a["test"]["auc"] == pytest.approx(b["test"]["auc"], abs=1e-6)
    pa, pb = predictions(stored / "predictions_test.csv"), predictions(online / "predictions_test.csv")
    for path in pa:
        np.testing.assert_allclose(pa[path], pb[path], atol=1e-4)
    val = predictions(stored / "predictions_val.csv")  # held-out (out-of-fold) predictions of the val images
    assert len(val) == 9 and a["probe"]["val_metrics"] == "out-of-fold"
    assert main(["evaluate", str(stored)]) == 0  # from the store again
    assert json.loads((stored / "eval-test-best.json").read_text())["auc"] == pytest.approx(a["test"]["auc"])
    out = root / "pred.csv"
    tests = [root / "data" / p for p in pa]
    assert main(["predict", str(stored), *map(str, tests), "--out", str(out)]) == 0  # online, from the images
    with open(out, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = next(p for p in pa if row["path"].endswith(p))
            np.testing.assert_allclose([float(row["prob_neg"]), float(row["prob_pos"])], pa[name], atol=1e-4)
    capsys.readouterr()
    assert main(["compare", str(stored), str(online)]) == 0
    assert "A − B: +0.00" in capsys.readouterr().out
    assert (stored / "calibration.json").exists() and (stored / "curves.png").exists()


def test_a_probe_reads_an_fpt_plus_store_and_refuses_what_it_cannot_read(setup, capsys):
    root, data, weights = setup
    fpt = root / "fpt"
    args = ["train", "--data", str(data), "--out", str(fpt), "--weights", str(weights), "--epochs", "1", *COMMON,
            "--side-img-size", "32", "--side-depth", "2", "--reduction", "2", "--num-prompts", "4"]  # fmt: skip
    assert main(args) == 0
    run = train(setup, "knn", "knn-on-fpt", "--store", str(fpt / "store"))
    assert json.loads((run / "results.json").read_text())["source"] == "store"
    old = root / "old-store"  # what fptplus wrote before format 3: no mean patch token
    shutil.copytree(fpt / "store", old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["fingerprint"]["format_version"] = 2
    del manifest["fields"]["patch_mean"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for f in old.glob("*.patch_mean.npy"):
        f.unlink()
    capsys.readouterr()

    def probe(out, store, *extra):
        return ["train", "--method", "linear", "--data", str(data), "--out", str(root / out), "--weights",
                str(weights), "--store", str(store), *COMMON, *extra]  # fmt: skip

    assert main(probe("on-old", old)) == 2
    err = capsys.readouterr().err
    assert "older fptplus (store format 2)" in err and "--features cls" in err and "--overwrite" in err
    assert main(probe("on-old-cls", old, "--features", "cls")) == 0  # the CLS alone serves
    low = root / "low"  # a store whose top fused layer is not the last block holds no pooled features
    assert (
        main(
            [
                "preload",
                "--data",
                str(data),
                "--out",
                str(low),
                "--weights",
                str(weights),
                *COMMON[:4],
                "--side-img-size",
                "32",
                "--side-depth",
                "2",
                "--fused-layers",
                "[0]",
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(probe("on-low", low)) == 2
    assert "holds no pooled features" in capsys.readouterr().err


def test_inner_folds_keep_patients_together_and_balance_classes(setup):
    index = load_index(setup[1], seed=0)
    ids = [i for i, s in enumerate(index.samples) if s.split != "test"]
    folds = inner_folds(index, ids, 5, seed=3, log=lambda line: None)
    by_group = {}
    for i, f in zip(ids, folds, strict=True):
        by_group.setdefault(index.samples[i].group, set()).add(f)
    assert all(len(fs) == 1 for fs in by_group.values())  # a patient never spans two folds
    for f in range(5):
        labels = [index.samples[i].label for i, g in zip(ids, folds, strict=True) if g == f]
        assert 0 in labels and 1 in labels
    lines = []
    assert max(inner_folds(index, ids[:12], 5, seed=0, log=lines.append)) + 1 < 5  # 4 patients: fewer folds
    assert "fewer than 5 images or groups" in lines[0]


def test_probe_refuses_class_weights(setup, capsys):
    root, data, weights = setup
    args = ["train", "--method", "linear", "--data", str(data), "--out", str(root / "cw"), "--weights", str(weights),
            *COMMON, "--no-preload", "--class-weights", "balanced"]  # fmt: skip
    assert main(args) == 2
    assert "drop --class-weights" in capsys.readouterr().err


def test_multilabel_probe(tmp_path):
    weights = tiny_weights(tmp_path)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        a, b = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        img = np.clip(rng.normal(90 + 70 * a, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
        img[:, :24, 0] = 200 * b
        save(tmp_path / "data" / f"img{i}.png", img)
        rows.append({"path": f"img{i}.png", "A": a, "B": b, "split": ["train", "train", "val", "test"][i % 4]})
    data = write_csv(tmp_path / "data" / "labels.csv", rows, ["path", "A", "B", "split"])
    for method in ("linear", "knn"):
        args = ["train", "--method", method, "--data", str(data), "--label-columns", "A,B", "--out",
                str(tmp_path / method), "--weights", str(weights), *COMMON, "--no-preload"]  # fmt: skip
        assert main(args) == 0
        results = json.loads((tmp_path / method / "results.json").read_text())
        assert len(results["test"]["per_label_auc"]) == 2 and results["calibration"] is None
        out = tmp_path / f"{method}.json"
        assert main(["predict", str(tmp_path / method), str(tmp_path / "data" / "img0.png"), "--out", str(out)]) == 0
        row = json.loads(out.read_text())[0]
        assert 0 <= row["prob_A"] <= 1 and 0 <= row["prob_B"] <= 1


def test_probe_scores_are_deterministic_and_torch_only(setup):
    """Two fits of the same run give the same bytes of predictions (no hidden randomness)."""
    a = train(setup, "linear", "det-a", "--no-preload")
    b = train(setup, "linear", "det-b", "--no-preload")
    assert (a / "predictions_test.csv").read_bytes() == (b / "predictions_test.csv").read_bytes()
    assert torch.equal(*(torch.tensor(json.loads((r / "results.json").read_text())["test"]["auc"]) for r in (a, b)))


@pytest.mark.skipif(not __import__("importlib").util.find_spec("onnxruntime"), reason="needs onnxruntime")
@pytest.mark.parametrize("method", ["linear", "knn"])
def test_probe_exports_to_onnx(setup, method):
    run = train(setup, method, f"export-{method}", "--no-preload")
    out = setup[0] / f"{method}.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert list(side["inputs"]) == ["image"] and side["parity"]["max_abs_logit_diff"] <= 1e-4
