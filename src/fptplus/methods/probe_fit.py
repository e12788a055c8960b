"""Frozen-feature probes fitted to convergence, with their hyper-parameter chosen by cross-validation (numerics only).

    logistic   L2-regularised logistic regression, scikit-learn's objective  C · Σᵢ loss(xᵢ, yᵢ) + ½‖W‖²  (intercept not
               penalised), minimised by SciPy's L-BFGS-B (the solver scikit-learn uses) in float64 to a max-abs
               gradient of 1e-8 of the objective divided by C·n:
               binary → one coefficient vector (sigmoid), multi-class → multinomial (softmax), multi-label → one
               independent binary regression per label. Features are standardised with the fit data's mean and
               (population) std, as scikit-learn's StandardScaler.
    knn        cosine k-nearest neighbours on the standardised features, uniform votes (scikit-learn's
               KNeighborsClassifier(metric="cosine")): the share of the k neighbours in each class (per label for
               multi-label).

`cross_validate` scores grid values by the AUC of the pooled out-of-fold predictions (the folds come from the caller:
patient-grouped, class-stratified, `fptplus.data.folds`); the standardisation is refitted inside every fold. The grid
is walked from the most to the least regularised value, every fold warm-starting from its previous fit, and stops
after `patience` values in a row below the best (the weakly regularised end is the slow one to fit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..metrics import auc

Task = Literal["binary", "multiclass", "multilabel"]
GRAD_TOL = 1e-8  # max |gradient| of the scaled objective (mean loss + ‖W‖² / (2Cn)) at which L-BFGS stops
CONVERGED_TOL = 1e-6  # above this after max_iter the fit is reported as not converged


def task_of(y: np.ndarray, num_classes: int) -> Task:
    """binary / multiclass for labels (n,), multilabel for (n, L) 0/1 labels."""
    return "multilabel" if y.ndim == 2 else "binary" if num_classes == 2 else "multiclass"


@dataclass(frozen=True)
class Standardizer:
    """x → (x − mean) / std per feature (std 0 → 1), fitted on the probe's training rows."""

    mean: Tensor  # (F,)
    std: Tensor  # (F,)

    @classmethod
    def fit(cls, x: Tensor) -> Standardizer:
        std = x.std(dim=0, unbiased=False)
        return cls(x.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std)))

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@dataclass
class LogisticFit:
    """W (m, F), b (m,) on standardised features; m = 1 (binary), C (multinomial) or L (multi-label)."""

    weight: Tensor
    bias: Tensor
    iterations: int
    converged: bool
    grad_max: float


def _objective(x1: np.ndarray, y: np.ndarray, task: Task, outputs: int, penalty: float):
    """(theta -> (loss, gradient)) of the mean loss + penalty·‖W‖² over theta = [W | b] flattened (m, F + 1)."""
    n, dim = x1.shape[0], x1.shape[1] - 1
    onehot = np.eye(outputs)[y] if task == "multiclass" else None
    target = y.reshape(n, -1).astype(np.float64) if task != "multiclass" else None

    def fn(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta.reshape(outputs, dim + 1)
        z = x1 @ w.T  # (n, m) logits
        if task == "multiclass":
            top = z.max(axis=1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
            loss = float((lse - (z * onehot).sum(axis=1)).mean())
            residual = np.exp(z - lse[:, None]) - onehot  # softmax − one-hot
        else:  # one sigmoid per output: log(1 + e^z) − y·z, summed over the outputs
            loss = float((np.logaddexp(0.0, z) - target * z).sum(axis=1).mean())
            residual = 0.5 * (1.0 + np.tanh(0.5 * z)) - target  # sigmoid − y, without overflow
        grad = residual.T @ x1 / n  # (m, F + 1)
        loss += penalty * float((w[:, :dim] ** 2).sum())
        grad[:, :dim] += 2 * penalty * w[:, :dim]
        return loss, grad.ravel()

    return fn


def fit_logistic(
    x: Tensor, y: Tensor, c: float, task: Task, num_outputs: int, init: LogisticFit | None = None,
    max_iter: int = 5000,
) -> LogisticFit:  # fmt: skip
    """Minimises scikit-learn's L2 logistic objective at inverse regularisation strength `c`.

    Args:
        x: (n, F) standardised features (float64).
        y: labels (n,) int64, or (n, L) 0/1 for multi-label.
        c: inverse regularisation strength (> 0), as scikit-learn's `C`.
        task: "binary", "multiclass" or "multilabel".
        num_outputs: m, the rows of W (1 for binary).
        init: a previous solution (warm start along the C grid).
        max_iter: L-BFGS iterations at most.
    """
    from scipy.optimize import minimize

    if not c > 0:
        raise ConfigError(f"the logistic probe's C must be > 0, got {c}")
    xn = x.detach().double().numpy()
    n, dim = xn.shape
    x1 = np.hstack([xn, np.ones((n, 1))])  # (n, F + 1): the intercept as a last, unpenalised column
    fn = _objective(x1, y.numpy(), task, num_outputs, 1.0 / (2.0 * c * n))  # the objective / (C·n)
    theta = np.zeros(num_outputs * (dim + 1))
    if init is not None:
        theta = torch.cat([init.weight, init.bias[:, None]], dim=1).numpy().ravel().copy()
    result = minimize(fn, theta, jac=True, method="L-BFGS-B",
                      options={"gtol": GRAD_TOL, "ftol": 1e-15, "maxiter": max_iter, "maxcor": 20})  # fmt: skip
    w = torch.from_numpy(result.x.reshape(num_outputs, dim + 1).copy())
    grad_max = float(np.abs(result.jac).max())
    return LogisticFit(w[:, :dim], w[:, dim], int(result.nit), grad_max <= CONVERGED_TOL, grad_max)


def logistic_probs(fit: LogisticFit, x: Tensor, task: Task) -> Tensor:
    """Class probabilities (n, C) (binary: [1 − p, p]) or per-label probabilities (n, L)."""
    z = x @ fit.weight.T + fit.bias  # (n, m)
    if task == "binary":
        p = torch.sigmoid(z[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(z, dim=1) if task == "multiclass" else torch.sigmoid(z)


def knn_probs(bank: Tensor, bank_targets: Tensor, query: Tensor, k: int) -> Tensor:
    """Uniform-vote cosine kNN: the mean target row of each query's k most similar bank rows.

    Args:
        bank: (n, F) features of the fit rows (standardised); rows are L2-normalised here.
        bank_targets: (n, C) one-hot classes, or (n, L) 0/1 labels.
        query: (q, F) features to classify (standardised the same way).
        k: neighbours (1 <= k <= n).

    Returns:
        (q, C) vote shares (each row sums to 1 for one-hot targets) or (q, L) per-label shares.
    """
    sims = F.normalize(query, dim=1) @ F.normalize(bank, dim=1).T  # (q, n) cosine similarities
    top = sims.topk(k, dim=1).indices  # (q, k)
    return bank_targets[top].mean(dim=1)  # (q, k, C) -> (q, C)


def one_hot_targets(y: Tensor, num_classes: int) -> Tensor:
    return y.to(torch.float64) if y.ndim == 2 else F.one_hot(y, num_classes).to(torch.float64)


@dataclass
class CVResult:
    """Cross-validation of one probe over a grid.

    Attributes:
        grid: the values tried, in order.
        scores: pooled out-of-fold AUC per value (None where undefined).
        best: the chosen value (highest score; ties → the earliest, i.e. the most regularised).
        oof_probs: (n, C) out-of-fold probabilities of the chosen value, in the rows' order.
        folds: the number of folds.
        notes: anything the fits reported (e.g. an unconverged fit).
    """

    grid: list[float]
    scores: list[float | None]
    best: float
    oof_probs: np.ndarray
    folds: int
    notes: list[str] = field(default_factory=list)

    def table(self) -> list[dict[str, float | None]]:
        return [{"value": v, "cv_auc": s} for v, s in zip(self.grid, self.scores, strict=True)]


# (x_fit, y_fit, x_held, notes) -> (grid value -> (q, C) probabilities of the held-out rows); called once per fold,
# its function then once per grid value in order (a fit may warm-start from the previous value's)
FoldModel = Callable[[Tensor, Tensor, Tensor, list[str]], Callable[[float], Tensor]]


def cross_validate(
    x: Tensor, y: Tensor, folds: Sequence[int], grid: Sequence[float], fold_model: FoldModel, patience: int = 3
) -> CVResult:
    """Out-of-fold probabilities along the grid; the value with the best pooled out-of-fold AUC.

    Args:
        x: (n, F) raw features (float64).
        y: labels (n,) or (n, L).
        folds: the fold (0..K-1) of every row.
        grid: hyper-parameter values, most regularised first.
        fold_model: see `FoldModel`; it standardises with the fit rows only.
        patience: stop after this many values in a row below the best (0: the whole grid).
    """
    folds_arr = np.asarray(folds)
    k = int(folds_arr.max()) + 1
    notes: list[str] = []
    held = [np.nonzero(folds_arr == f)[0] for f in range(k)]
    models = []
    for f in range(k):
        fit = torch.from_numpy(np.nonzero(folds_arr != f)[0])
        models.append(fold_model(x[fit], y[fit], x[torch.from_numpy(held[f])], notes))
    labels = y.numpy()
    scores: list[float | None] = []
    best, best_oof = None, None
    for g, value in enumerate(grid):
        oof = None
        for f in range(k):
            probs = models[f](value).numpy()
            if oof is None:
                oof = np.zeros((len(x), probs.shape[1]))
            oof[held[f]] = probs
        scores.append(auc(labels, oof)[0])
        if scores[-1] is not None and (best is None or scores[-1] > scores[best]):
            best, best_oof = g, oof
        if patience and best is not None and g - best >= patience:
            break
    if best is None:
        raise ConfigError("cross-validation AUC is undefined for every setting (a single class in train+val?)")
    return CVResult(list(grid[: len(scores)]), scores, grid[best], best_oof, k, sorted(set(notes)))
