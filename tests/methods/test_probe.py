"""The frozen-feature probes against scikit-learn: the logistic fit, the kNN votes, the cross-validated choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fptplus.methods import get_method
from fptplus.methods.probe import KNNHead, LinearHead
from fptplus.methods.probe_fit import Standardizer, cross_validate, fit_logistic, knn_probs, logistic_probs

from conftest import TINY


def blobs(n=120, dim=24, classes=2, seed=0, shift=0.6):
    """Overlapping Gaussian classes (not separable: the optimum is finite), uneven feature scales."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centers = rng.normal(0, shift, (classes, dim))
    x = centers[y] + rng.normal(0, 1, (n, dim))
    x *= rng.uniform(0.1, 20, dim)  # standardisation matters
    return x, y


def sklearn_lr(x, y, c):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, tol=1e-12, max_iter=100_000)).fit(x, y)


@pytest.mark.parametrize("classes,c", [(2, 0.01), (2, 1.0), (3, 0.1), (4, 10.0)])
def test_logistic_fit_equals_scikit_learn(classes, c):
    x, y = blobs(classes=classes)
    task = "binary" if classes == 2 else "multiclass"
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    scaler = Standardizer.fit(xt)
    fit = fit_logistic(scaler(xt), yt, c, task, 1 if classes == 2 else classes)
    assert fit.converged
    x_new, _ = blobs(n=40, classes=classes, seed=1)
    want = sklearn_lr(x, y, c).predict_proba(x_new)
    got = logistic_probs(fit, scaler(torch.from_numpy(x_new)), task).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    head = LinearHead(x.shape[1], classes).double()  # the standardisation folded into one Linear
    head.load_fit(fit, scaler, task)
    with torch.no_grad():
        np.testing.assert_allclose(head(torch.from_numpy(x_new)).softmax(-1).numpy(), want, atol=1e-5)


def test_multilabel_logistic_is_one_scikit_learn_fit_per_label():
    x, _ = blobs(n=150, dim=10)
    rng = np.random.default_rng(3)
    y = (x[:, :3] / x[:, :3].std(0) + rng.normal(0, 1.5, (150, 3)) > 0).astype(np.int64)  # (n, 3) 0/1
    xt = torch.from_numpy(x)
    scaler = Standardizer.fit(xt)
    fit = fit_logistic(scaler(xt), torch.from_numpy(y), 0.3, "multilabel", 3)
    got = logistic_probs(fit, scaler(xt), "multilabel").numpy()
    for j in range(3):
        np.testing.assert_allclose(got[:, j], sklearn_lr(x, y[:, j], 0.3).predict_proba(x)[:, 1], atol=1e-5)


@pytest.mark.parametrize("k,classes", [(1, 2), (5, 2), (7, 3)])
def test_knn_votes_equal_scikit_learn_cosine_neighbours(k, classes):
    x, y = blobs(n=90, classes=classes)
    x_new, _ = blobs(n=30, classes=classes, seed=2)
    scaler = StandardScaler().fit(x)
    want = (KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
            .fit(scaler.transform(x), y).predict_proba(scaler.transform(x_new)))  # fmt: skip
    ours = Standardizer.fit(torch.from_numpy(x))
    onehot = torch.nn.functional.one_hot(torch.from_numpy(y), classes).double()
    got = knn_probs(ours(torch.from_numpy(x)), onehot, ours(torch.from_numpy(x_new)), k).numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)
    head = KNNHead(x.shape[1], classes)
    head.load_fit(torch.from_numpy(x), onehot, ours, k, False)
    with torch.no_grad():
        np.testing.assert_allclose(head(torch.from_numpy(x_new).float()).softmax(-1).numpy(), want, atol=1e-4)


def test_cross_validation_equals_scikit_learns_out_of_fold_predictions():
    """The same folds, every C: out-of-fold probabilities and their AUC as scikit-learn's cross_val_predict."""
    x, y = blobs(n=100, shift=0.35)
    folds = np.arange(100) % 4
    grid = [1e-3, 1e-2, 0.1, 1.0]

    def fold_model(x_fit, y_fit, x_held, notes):
        scaler = Standardizer.fit(x_fit)
        return lambda c: logistic_probs(fit_logistic(scaler(x_fit), y_fit, c, "binary", 1), scaler(x_held), "binary")

    cv = cross_validate(torch.from_numpy(x), torch.from_numpy(y), folds.tolist(), grid, fold_model, patience=0)
    want = []
    for c in grid:
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=c, tol=1e-12, max_iter=100_000))
        oof = cross_val_predict(pipe, x, y, cv=PredefinedSplit(folds), method="predict_proba")
        want.append(roc_auc_score(y, oof[:, 1]))
        if c == cv.best:
            np.testing.assert_allclose(cv.oof_probs, oof, atol=1e-5)
    np.testing.assert_allclose(cv.scores, want, atol=1e-6)
    assert cv.best == grid[int(np.argmax(want))] and cv.folds == 4


def test_probe_configs_refuse_bad_grids():
    from fptplus.errors import ConfigError

    for name, field, bad in (("linear", "c_grid", [0.1, -1]), ("linear", "c_grid", []), ("knn", "k_grid", [0]),
                             ("linear", "cv_folds", 1), ("linear", "features", "mean")):  # fmt: skip
        with pytest.raises(ConfigError):
            get_method(name).make_config(backbone_kwargs=dict(TINY), img_size=64, **{field: bad})


def test_the_grid_walk_stops_after_values_in_a_row_below_the_best():
    x, y = blobs(n=60)
    scores = {1.0: 0.6, 2.0: 0.9, 3.0: 0.8, 4.0: 0.7, 5.0: 0.7, 6.0: 0.95}
    tried = []

    def fold_model(x_fit, y_fit, x_held, notes):
        def at(v):  # probabilities whose AUC is scores[v] only on average; enough to order the values
            tried.append(v)
            p = torch.full((len(x_held),), 0.5, dtype=torch.float64)
            return torch.stack([1 - p, p], dim=1)

        return at

    cv = cross_validate(torch.from_numpy(x), torch.from_numpy(y), (np.arange(60) % 2).tolist(), list(scores),
                        fold_model, patience=2)  # fmt: skip
    assert cv.grid == [1.0, 2.0, 3.0] and set(tried) == {1.0, 2.0, 3.0}  # all tie at 0.5: stops 2 after the first
