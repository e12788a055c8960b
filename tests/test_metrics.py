"""Every metric against scikit-learn on random predictions (binary and 5-class), plus PPE/PME."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from fptplus.metrics import auc, bootstrap_auc_ci, compute_metrics, pair_auc, pme, ppe


def random_predictions(n, c, seed, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[labels] * rng.random((n, 1))
    if ties:
        logits = np.round(logits, 1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


@pytest.mark.parametrize("c", [2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_against_sklearn(c, seed, ties):
    labels, probs = random_predictions(300, c, seed, ties)
    m = compute_metrics(labels, probs, loss=0.5)
    preds = probs.argmax(1)
    want_auc = skm.roc_auc_score(labels, probs[:, 1]) if c == 2 else skm.roc_auc_score(labels, probs, multi_class="ovr")
    assert m.auc == pytest.approx(want_auc, abs=1e-12)
    assert m.accuracy == pytest.approx(skm.accuracy_score(labels, preds))
    assert m.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert m.macro_f1 == pytest.approx(skm.f1_score(labels, preds, average="macro", labels=range(c), zero_division=0))
    assert m.kappa == pytest.approx(skm.cohen_kappa_score(labels, preds, labels=range(c)))  # nominal: unweighted
    assert m.kappa_weights == "none"
    ordinal = compute_metrics(labels, probs, loss=0.5, ordinal=True)
    assert ordinal.kappa == pytest.approx(skm.cohen_kappa_score(labels, preds, weights="quadratic", labels=range(c)))
    assert ordinal.kappa_weights == "quadratic" and (c > 2 or ordinal.kappa == pytest.approx(m.kappa))
    assert m.confusion == skm.confusion_matrix(labels, preds, labels=range(c)).tolist()
    assert m.auc_note is None


def test_f1_and_balanced_accuracy_with_a_class_never_predicted():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 0, 1, 1, 1, 1]] * 0.8 + 0.1
    m = compute_metrics(labels, probs, 0.0)
    preds = probs.argmax(1)
    assert m.macro_f1 == pytest.approx(skm.f1_score(labels, preds, average="macro", zero_division=0))
    assert m.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(labels, preds))


def test_single_class_split_is_undefined_not_nan():
    labels = np.zeros(10, dtype=int)
    probs = np.full((10, 2), 0.5)
    m = compute_metrics(labels, probs, 0.7, ci=True)
    assert m.auc is None and "single class" in m.auc_note and m.auc_ci is None
    assert "AUC n/a" in m.summary()


def test_multiclass_auc_with_an_absent_class_is_flagged():
    labels, probs = random_predictions(100, 3, 0)
    labels[labels == 2] = 1
    value, note = auc(labels, probs)
    per = [skm.roc_auc_score(labels == k, probs[:, k]) for k in (0, 1)]
    assert value == pytest.approx(np.mean(per)) and "2 classes present" in note


def test_bootstrap_ci_brackets_the_auc_and_is_seeded():
    labels, probs = random_predictions(200, 2, 3)
    lo, hi = bootstrap_auc_ci(labels, probs, n=300, seed=1)
    point = skm.roc_auc_score(labels, probs[:, 1])
    assert lo < point < hi and hi - lo < 0.2
    assert bootstrap_auc_ci(labels, probs, n=300, seed=1) == (lo, hi)


def test_ppe_pme_match_the_paper():
    assert ppe(87.12, 0.0103) == pytest.approx(86.73, abs=0.005)
    assert pme(87.12, 736 / 23128) == pytest.approx(85.94, abs=0.005)
    assert ppe(88.82, 1.0) == pytest.approx(65.73, abs=0.005) and pme(88.82, 1.0) == pytest.approx(65.73, abs=0.005)
    assert pme(83.28, 3416 / 23128) == pytest.approx(78.44, abs=0.01)  # linear probing row of Table 1


@pytest.mark.parametrize("seed", [0, 1])
def test_pair_auc_is_the_binary_auc_on_the_two_classes(seed):
    labels, probs = random_predictions(400, 3, seed)
    keep = labels != 0
    score = probs[keep, 2] / (probs[keep, 1] + probs[keep, 2])
    assert pair_auc(labels, probs, 1, 2) == pytest.approx(skm.roc_auc_score(labels[keep] == 2, score), abs=1e-12)
    assert pair_auc(labels, probs, 2, 1) == pytest.approx(pair_auc(labels, probs, 1, 2), abs=1e-12)  # symmetric
    assert pair_auc(labels[labels != 2], probs[labels != 2], 1, 2) is None


def test_multilabel_metrics_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

    from fptplus.metrics import compute_metrics

    rng = np.random.default_rng(5)
    y = (rng.random((200, 4)) < [0.5, 0.2, 0.1, 0.7]).astype(int)
    p = np.clip(y * 0.3 + rng.random((200, 4)) * 0.7, 0, 1)
    p[:20, 1] = 0.5  # ties
    m = compute_metrics(y, p, 0.1, ci=True, ci_samples=50)
    per = [roc_auc_score(y[:, j], p[:, j]) for j in range(4)]
    assert m.extra["per_label_auc"] == pytest.approx(per)
    assert m.auc == pytest.approx(np.mean(per))
    pred = (p >= 0.5).astype(int)
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert m.balanced_accuracy == pytest.approx(
        np.mean([balanced_accuracy_score(y[:, j], pred[:, j]) for j in range(4)])
    )
    assert m.kappa == pytest.approx(np.mean([cohen_kappa_score(y[:, j], pred[:, j]) for j in range(4)]))
    assert m.accuracy == pytest.approx((pred == y).mean())
    assert m.extra["subset_accuracy"] == pytest.approx((pred == y).all(1).mean())
    lo, hi = m.auc_ci
    assert lo < m.auc < hi
    y[:, 2] = 0  # a constant label: skipped from the mean, said in the note
    m = compute_metrics(y, p, 0.1)
    assert m.extra["per_label_auc"][2] is None and m.auc == pytest.approx(np.mean([per[0], per[1], per[3]]))
    assert "3 labels" in m.auc_note
