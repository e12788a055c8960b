"""Frozen-feature probes fitted to convergence, with their hyper-parameter chosen by cross-validation (numerics only).

    logistic   L2-regularised logistic regression, scikit-learn's objective  C · Σᵢ loss(xᵢ, yᵢ) + ½‖W‖²  (intercept not
               penalised), minimised by L-BFGS in float64 to a max-abs gradient of 1e-9 (scaled objective):
               binary → one coefficient vector (sigmoid), multi-class → multinomial (softmax), multi-label → one
               independent binary regression per label. Features are standardised with the fit data's mean and
               (population) std, as scikit-learn's StandardScaler.
    knn        cosine k-nearest neighbours on the standardised features, uniform votes (scikit-learn's
               KNeighborsClassifier(metric="cosine")): the share of the k neighbours in each class (per label for
               multi-label).

`cross_validate` scores every grid value by the AUC of the pooled out-of-fold predictions (the folds come from the
caller: patient-grouped, class-stratified, `fptplus.data.folds`); the standardisation is refitted inside every fold.
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
GRAD_TOL = 1e-9  # max |gradient| of the scaled objective (mean loss + ‖W‖² / (2Cn)) at which L-BFGS stops
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


def _logistic_loss(z: Tensor, y: Tensor, task: Task) -> Tensor:
    """Mean over samples of the summed per-sample loss; z (n, m) logits."""
    if task == "multiclass":
        return F.cross_entropy(z, y, reduction="sum") / len(y)
    target = y.to(z.dtype).reshape(z.shape)  # binary: (n, 1); multi-label: (n, L)
    return F.binary_cross_entropy_with_logits(z, target, reduction="sum") / len(y)


def fit_logistic(
    x: Tensor, y: Tensor, c: float, task: Task, num_outputs: int, init: LogisticFit | None = None,
    max_iter: int = 2000,
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
    if not c > 0:
        raise ConfigError(f"the logistic probe's C must be > 0, got {c}")
    n, dim = x.shape
    w = (init.weight.clone() if init is not None else torch.zeros(num_outputs, dim, dtype=x.dtype)).requires_grad_()
    b = (init.bias.clone() if init is not None else torch.zeros(num_outputs, dtype=x.dtype)).requires_grad_()
    penalty = 1.0 / (2.0 * c * n)  # the objective divided by C·n: same minimiser, O(1) gradients

    def objective() -> Tensor:
        return _logistic_loss(x @ w.T + b, y, task) + penalty * (w * w).sum()  # (n, m) logits

    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=GRAD_TOL, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with torch.enable_grad():  # also when called under no_grad (evaluation code)
        opt.step(closure)
        opt.zero_grad()
        objective().backward()
    grad_max = float(max(w.grad.abs().max(), b.grad.abs().max()))
    iterations = int(opt.state[w].get("n_iter", 0))
    return LogisticFit(w.detach(), b.detach(), iterations, grad_max <= CONVERGED_TOL, grad_max)


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


FoldPredict = Callable[[Tensor, Tensor, Tensor, list[str]], list[Tensor]]


def cross_validate(
    x: Tensor, y: Tensor, folds: Sequence[int], grid: Sequence[float], fold_predict: FoldPredict
) -> CVResult:
    """Out-of-fold probabilities for every grid value; the value with the best pooled OOF AUC.

    Args:
        x: (n, F) raw features (float64).
        y: labels (n,) or (n, L).
        folds: the fold (0..K-1) of every row.
        grid: hyper-parameter values, most regularised first.
        fold_predict: (x_fit, y_fit, x_held_out, notes) -> one (q, C) probability tensor per grid value; the
            function standardises with the fit rows only.
    """
    folds_arr = np.asarray(folds)
    k = int(folds_arr.max()) + 1
    oof: list[np.ndarray | None] = [None] * len(grid)
    notes: list[str] = []
    for f in range(k):
        held = torch.from_numpy(np.nonzero(folds_arr == f)[0])
        fit = torch.from_numpy(np.nonzero(folds_arr != f)[0])
        for g, probs in enumerate(fold_predict(x[fit], y[fit], x[held], notes)):
            if oof[g] is None:
                oof[g] = np.zeros((len(x), probs.shape[1]))
            oof[g][held.numpy()] = probs.numpy()
    labels = y.numpy()
    scores = [auc(labels, p)[0] for p in oof]
    defined = [(s, -i) for i, s in enumerate(scores) if s is not None]
    if not defined:
        raise ConfigError("cross-validation AUC is undefined for every setting (a single class in train+val?)")
    best = -max(defined)[1]
    return CVResult(list(grid), scores, grid[best], oof[best], k, sorted(set(notes)))
