"""Classification metrics (numpy only; the tests check every one against scikit-learn) and PPE/PME.

AUC: binary → ROC AUC of the positive-class probability; multi-class → macro one-vs-rest AUC of the softmax
probabilities; multi-label (labels (n, L) of 0/1, sigmoid probabilities (n, L)) → the mean of the per-label AUCs,
and the thresholded metrics at 0.5 averaged over labels (see `multilabel_metrics`). AUC is undefined when the
labels hold a single class: the metric is then `None` with a reason, never NaN, and model selection falls back
to the validation loss (see `fptplus.trainer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DivergedError


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (vectorised, as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    inverse = np.empty(len(x), dtype=np.int64)
    inverse[order] = np.arange(len(x))
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    dense = first.cumsum()[inverse]  # 1-based tie-group id of each element
    bounds = np.r_[np.nonzero(first)[0], len(x)]  # start of each tie group, then n
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC (Mann–Whitney U with tie correction); None when one of the two classes is absent."""
    check_finite(scores)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def check_finite(probs: np.ndarray, what: str = "scores") -> None:
    """Refuses NaN/inf scores: no metric is ever computed from them (a NaN ranks anywhere, e.g. AUC 1.0)."""
    bad = ~np.isfinite(np.asarray(probs, dtype=np.float64))
    if bad.any():
        rows = int(bad.reshape(len(bad), -1).any(1).sum()) if bad.ndim else 1
        raise DivergedError(f"{rows} of {len(bad) if bad.ndim else 1} {what} are NaN or infinite: no metric can be "
                            "computed from them (the model diverged, or its inputs hold NaN/inf)")  # fmt: skip


def auc(labels: np.ndarray, probs: np.ndarray) -> tuple[float | None, str | None]:
    """(AUC, reason-if-undefined) for labels (n,) and class probabilities (n, C), or multi-label (n, L) 0/1
    labels and per-label probabilities (n, L): the mean over the labels whose AUC is defined. NaN/inf scores are
    refused (`DivergedError`)."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    check_finite(probs)
    if labels.ndim == 2:
        per_label = [binary_auc(labels[:, j] == 1, probs[:, j]) for j in range(labels.shape[1])]
        defined = [a for a in per_label if a is not None]
        if not defined:
            return None, "AUC undefined: no label has both positive and negative images"
        note = None if len(defined) == len(per_label) else f"mean AUC over the {len(defined)} labels with both values"
        return float(np.mean(defined)), note
    present = np.unique(labels)
    if len(present) < 2:
        return None, f"AUC undefined: the labels hold a single class ({present.tolist()})"
    if probs.shape[1] == 2:
        return binary_auc(labels == 1, probs[:, 1]), None
    per_class = [binary_auc(labels == c, probs[:, c]) for c in range(probs.shape[1])]
    defined = [a for a in per_class if a is not None]
    note = None if len(defined) == probs.shape[1] else f"macro AUC over the {len(defined)} classes present"
    return float(np.mean(defined)), note


def pair_auc(labels: np.ndarray, probs: np.ndarray, a: int, b: int) -> float | None:
    """AUC of class b vs class a on the samples of those two classes only (score p_b / (p_a + p_b)).

    The one-vs-one view of a multi-class model: e.g. No_findings vs Pneumonia inside a 3-class chest X-ray
    model, which a third, easy class cannot inflate. None when either class is absent.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    keep = (labels == a) | (labels == b)
    pa, pb = probs[keep, a], probs[keep, b]
    return binary_auc(labels[keep] == b, pb / np.maximum(pa + pb, 1e-300))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(preds)), 1)
    return cm


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes present in the labels."""
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over all classes (a class never predicted nor present scores 0)."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def cohen_kappa(cm: np.ndarray, weights: str = "none") -> float:
    """Cohen's kappa: unweighted ("none", nominal classes) or with quadratic weights ("quadratic", ordered grades,
    e.g. diabetic retinopathy 0–4). Two classes give the same value either way."""
    n = cm.shape[0]
    total = cm.sum()
    if total == 0:
        return 0.0
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    if weights == "quadratic":
        w = (i - j) ** 2 / max((n - 1) ** 2, 1)
    elif weights == "none":
        w = (i != j).astype(np.float64)
    else:
        raise ValueError(f"kappa weights must be 'none' or 'quadratic', got {weights!r}")
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / total
    denom = (w * expected).sum()
    return float(1 - (w * cm).sum() / denom) if denom > 0 else 0.0


def bootstrap_auc_ci(
    labels: np.ndarray, probs: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the AUC (resamples that hold a single class are skipped)."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    if len(np.unique(labels)) < 2:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        value, _ = auc(labels[idx], probs[idx]) if len(np.unique(labels[idx])) > 1 else (None, None)
        if value is not None:
            values.append(value)
    if not values:
        return None
    lo, hi = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


@dataclass
class Metrics:
    """All metrics of one split. `auc` is None (with `auc_note`) when undefined."""

    n: int
    loss: float
    auc: float | None
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    kappa: float
    confusion: list[list[int]]
    kappa_weights: str = "none"
    auc_note: str | None = None
    auc_ci: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra

    def summary(self) -> str:
        auc_text = f"{100 * self.auc:.2f}" if self.auc is not None else "n/a"
        ci = f" [{100 * self.auc_ci[0]:.2f}, {100 * self.auc_ci[1]:.2f}]" if self.auc_ci else ""
        return (
            f"AUC {auc_text}{ci}  acc {100 * self.accuracy:.2f}  bal-acc {100 * self.balanced_accuracy:.2f}  "
            f"F1 {100 * self.macro_f1:.2f}  {'quadratic ' if self.kappa_weights == 'quadratic' else ''}kappa "
            f"{self.kappa:.3f}  loss {self.loss:.4f}  (n={self.n})"
        )


def compute_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    loss: float,
    ci: bool = False,
    ci_samples: int = 1000,
    seed: int = 0,
    ordinal: bool = False,
) -> Metrics:
    """Every metric from labels (n,) and softmax probabilities (n, C); `ordinal`: kappa with quadratic weights.
    NaN/inf probabilities are refused (`DivergedError`): no metric is computed from a diverged model."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    check_finite(probs, "probabilities")
    if labels.ndim == 2:
        return multilabel_metrics(labels, probs, loss, ci, ci_samples, seed)
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(labels, preds, probs.shape[1])
    value, note = auc(labels, probs)
    return Metrics(
        n=len(labels),
        loss=float(loss),
        auc=value,
        accuracy=float((preds == labels).mean()) if len(labels) else 0.0,
        balanced_accuracy=balanced_accuracy(cm) if len(labels) else 0.0,
        macro_f1=macro_f1(cm),
        kappa=cohen_kappa(cm, "quadratic" if ordinal else "none"),
        confusion=cm.tolist(),
        kappa_weights="quadratic" if ordinal else "none",
        auc_note=note,
        auc_ci=bootstrap_auc_ci(labels, probs, ci_samples, seed) if ci else None,
    )


def multilabel_metrics(labels: np.ndarray, probs: np.ndarray, loss: float, ci: bool = False, ci_samples: int = 1000,
                       seed: int = 0, threshold: float = 0.5) -> Metrics:  # fmt: skip
    """Multi-label metrics of (n, L) 0/1 labels and (n, L) probabilities.

    `auc`: mean of the per-label ROC AUCs (`extra["per_label_auc"]`, None where a label is constant); at the
    threshold, per label: accuracy, balanced accuracy, F1 and Cohen's kappa, each averaged over the labels;
    `extra["subset_accuracy"]`: images with every label right; `extra["per_label_confusion"]`: [[TN, FP], [FN, TP]].
    """
    n, num = labels.shape
    value, note = auc(labels, probs)
    per_auc = [binary_auc(labels[:, j] == 1, probs[:, j]) for j in range(num)]
    preds = (probs >= threshold).astype(np.int64)
    cms = [confusion_matrix(labels[:, j].astype(np.int64), preds[:, j], 2) for j in range(num)]
    mean = lambda values: float(np.mean(values)) if n else 0.0  # noqa: E731
    return Metrics(
        n=n,
        loss=float(loss),
        auc=value,
        accuracy=mean([np.trace(cm) / n for cm in cms]),
        balanced_accuracy=mean([balanced_accuracy(cm) for cm in cms]),
        macro_f1=mean([_f1_positive(cm) for cm in cms]),
        kappa=mean([cohen_kappa(cm) for cm in cms]),
        confusion=[],
        auc_note=note,
        auc_ci=bootstrap_auc_ci(labels, probs, ci_samples, seed) if ci else None,
        extra={
            "per_label_auc": per_auc,
            "subset_accuracy": float((preds == labels).all(1).mean()) if n else 0.0,
            "per_label_confusion": [cm.tolist() for cm in cms],
            "threshold": threshold,
        },
    )


def _f1_positive(cm: np.ndarray) -> float:
    """F1 of the positive class of a 2 × 2 confusion matrix (0 when it is never predicted nor present)."""
    tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def ppe(score: float, param_ratio: float) -> float:
    """Performance-parameter efficiency (paper eq. 9); `param_ratio` as a fraction (1.03 % -> 0.0103)."""
    return score * math.exp(-math.log10(param_ratio + 1))


def pme(score: float, memory_ratio: float) -> float:
    """Performance-memory efficiency (paper eq. 10); `memory_ratio` = memory / full fine-tuning memory."""
    return score * math.exp(-math.log10(memory_ratio + 1))
