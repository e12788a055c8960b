"""Calibration and operating points (numpy only; the tests check them against scikit-learn or by hand).

ECE          expected calibration error of the top-label confidence over equal-width bins:
             Σ_b |B_b|/n · |accuracy(B_b) − mean confidence(B_b)|
temperature  T > 0 minimising the validation NLL of softmax(z / T); z = log p recovers the logits up to a
             per-row constant, which softmax ignores, so a run's stored probabilities suffice. The NLL is
             convex in 1/T: a golden-section search on log T finds the minimum.
operating    binary tasks (class index 1 positive): the best sensitivity with specificity ≥ s, the best
points       specificity with sensitivity ≥ s (the ROC points scikit-learn's roc_curve lists), bootstrap
             CIs, and a decision threshold on the positive probability chosen on validation (Youden's J,
             or the highest threshold reaching a requested sensitivity) that `predict` applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE of probabilities (n, C) for labels (n,), equal-width confidence bins on (0, 1]."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return 0.0
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)  # bin b holds (b/bins, (b+1)/bins]
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total / len(labels))


def reliability_curve(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per non-empty bin: its range, mean confidence, accuracy and count (a reliability diagram's points)."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            out.append({"low": b / bins, "high": (b + 1) / bins, "confidence": float(conf[sel].mean()),
                        "accuracy": float(correct[sel].mean()), "count": int(sel.sum())})  # fmt: skip
    return out


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities of logits divided by T."""
    z = _log_probs(probs) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    labels = np.asarray(labels)
    return float(-_log_probs(probs)[np.arange(len(labels)), labels].mean())


def fit_temperature(labels: np.ndarray, probs: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The T in [low, high] minimising the NLL of softmax(log p / T) (golden-section search on log T)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ConfigError("temperature scaling needs validation samples; the validation split is empty")
    a, b = math.log(low), math.log(high)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    f = lambda t: nll(labels, apply_temperature(probs, math.exp(t)))  # noqa: E731
    fc, fd = f(c), f(d)
    for _ in range(80):  # interval shrinks by 0.618 per step: 80 steps reach float precision on log T
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))


MIN_CALIBRATION_IMAGES = 50  # fewer validation images: no temperature is fitted (6 images once gave T = 0.11)
MIN_PER_CLASS = 5


def guarded_temperature(labels: np.ndarray, probs: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[float, str]:
    """(T, why): a temperature only when the validation set can support one, else T = 1 and the reason.

    Refused below MIN_CALIBRATION_IMAGES images or MIN_PER_CLASS of a class, and when a temperature fitted on 4/5 of
    the validation images does not lower the negative log-likelihood of the held-out fifth (pooled over 5 folds):
    a fit that only memorises validation is never applied silently.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    n = len(labels)
    counts = np.bincount(labels, minlength=probs.shape[1])
    smallest = int(counts[counts > 0].min()) if n else 0
    if n < MIN_CALIBRATION_IMAGES or smallest < MIN_PER_CLASS:
        need = f">= {MIN_CALIBRATION_IMAGES} images and >= {MIN_PER_CLASS} per class"
        return 1.0, f"not fitted: {n} validation images (smallest class {smallest}); a temperature needs {need}"
    order = np.random.default_rng(seed).permutation(n)
    fold_of = np.empty(n, dtype=int)
    fold_of[order] = np.arange(n) % folds
    held_t, held_1 = 0.0, 0.0
    for f in range(folds):
        fit, held = fold_of != f, fold_of == f
        t = fit_temperature(labels[fit], probs[fit])
        held_t += nll(labels[held], apply_temperature(probs[held], t)) * held.sum()
        held_1 += nll(labels[held], probs[held]) * held.sum()
    if held_t >= held_1:
        return 1.0, (f"not applied: a temperature fitted on 4/5 of validation did not lower the held-out fifth's NLL "
                     f"({held_1 / n:.4f} -> {held_t / n:.4f}, 5 folds)")  # fmt: skip
    return fit_temperature(
        labels, probs
    ), f"fitted on {n} validation images (held-out NLL {held_1 / n:.4f} -> {held_t / n:.4f}, 5 folds)"


def roc_points(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score (predict positive when score ≥ threshold), from (0, 0)."""
    positive, scores = np.asarray(positive, dtype=bool), np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order]
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]  # last index of each tie group
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[np.inf, s[last]]


def sensitivity_at_specificity(positive: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    fpr, tpr, _ = roc_points(positive, scores)
    return float(tpr[fpr <= 1 - specificity + 1e-12].max())


def specificity_at_sensitivity(positive: np.ndarray, scores: np.ndarray, sensitivity: float) -> float:
    fpr, tpr, _ = roc_points(positive, scores)
    return float(1 - fpr[tpr >= sensitivity - 1e-12].min())


def choose_threshold(positive: np.ndarray, scores: np.ndarray, rule: str) -> float:
    """A threshold on the positive probability: "youden" (max sensitivity + specificity − 1) or "sens:S" (the
    highest threshold whose sensitivity is ≥ S, i.e. the best specificity at that sensitivity)."""
    fpr, tpr, thr = roc_points(positive, scores)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the (0, 0) point at threshold +inf
    if rule == "youden":
        return float(thr[int(np.argmax(tpr - fpr))])
    if rule.startswith("sens:"):
        target = float(rule[5:])
        return float(thr[int(np.nonzero(tpr >= target - 1e-12)[0][0])])
    raise ConfigError(f"threshold rule must be 'youden' or 'sens:S' (e.g. sens:0.9), got {rule!r}")


@dataclass
class OperatingPoint:
    sensitivity: float
    specificity: float
    ci: dict[str, tuple[float, float]] | None = None


def at_threshold(positive: np.ndarray, scores: np.ndarray, threshold: float) -> OperatingPoint:
    positive, pred = np.asarray(positive, dtype=bool), np.asarray(scores) >= threshold
    sens = float(pred[positive].mean()) if positive.any() else float("nan")
    spec = float((~pred[~positive]).mean()) if (~positive).any() else float("nan")
    return OperatingPoint(sens, spec)


def bootstrap_ci(fn, positive: np.ndarray, scores: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap CI of fn(positive, scores) (resamples holding a single class are skipped)."""
    positive, scores = np.asarray(positive, dtype=bool), np.asarray(scores)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(positive), len(positive))
        if positive[idx].any() and (~positive[idx]).any():
            values.append(fn(positive[idx], scores[idx]))
    if not values:
        return None
    lo, hi = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def clinical_report(
    val_labels: np.ndarray,
    val_probs: np.ndarray,
    test_labels: np.ndarray,
    test_probs: np.ndarray,
    threshold_rule: str = "youden",
    levels: tuple[float, ...] = (0.9, 0.95),
    ci_samples: int = 1000,
    seed: int = 0,
    bins: int = 15,
) -> dict:
    """Calibration (ECE before/after a validation-fitted temperature, when validation supports one: see
    `guarded_temperature`) and, for binary tasks, operating points."""
    T, why = guarded_temperature(val_labels, val_probs, seed=seed)
    out: dict = {
        "temperature": T,
        "temperature_note": why,
        "ece_bins": bins,
        "ece": {
            "val": expected_calibration_error(val_labels, val_probs, bins),
            "test": expected_calibration_error(test_labels, test_probs, bins),
        },
        "ece_temperature_scaled": {
            "val": expected_calibration_error(val_labels, apply_temperature(val_probs, T), bins),
            "test": expected_calibration_error(test_labels, apply_temperature(test_probs, T), bins),
        },
        "nll": {
            "test": nll(test_labels, test_probs),
            "test_temperature_scaled": nll(test_labels, apply_temperature(test_probs, T)),
        },
        "reliability_test": reliability_curve(test_labels, test_probs, bins),
    }
    if np.asarray(test_probs).shape[1] != 2:
        return out
    vpos, vs = np.asarray(val_labels) == 1, np.asarray(val_probs)[:, 1]
    tpos, ts = np.asarray(test_labels) == 1, np.asarray(test_probs)[:, 1]
    if not (vpos.any() and (~vpos).any() and tpos.any() and (~tpos).any()):
        return out
    thr = choose_threshold(vpos, vs, threshold_rule)
    point = at_threshold(tpos, ts, thr)

    def ci(fn):
        return bootstrap_ci(fn, tpos, ts, ci_samples, seed) if ci_samples else None

    out["threshold"] = {"rule": threshold_rule, "value": thr, "chosen_on": "val",
                        "test_sensitivity": point.sensitivity, "test_specificity": point.specificity,
                        "test_sensitivity_ci": ci(lambda p, s: at_threshold(p, s, thr).sensitivity),
                        "test_specificity_ci": ci(lambda p, s: at_threshold(p, s, thr).specificity)}  # fmt: skip
    out["operating_points_test"] = {
        f"sensitivity_at_specificity_{level:g}": {
            "value": sensitivity_at_specificity(tpos, ts, level),
            "ci": ci(lambda p, s, lv=level: sensitivity_at_specificity(p, s, lv)),
        }
        for level in levels
    } | {
        f"specificity_at_sensitivity_{level:g}": {
            "value": specificity_at_sensitivity(tpos, ts, level),
            "ci": ci(lambda p, s, lv=level: specificity_at_sensitivity(p, s, lv)),
        }
        for level in levels
    }
    return out
