"""Run pictures: ROC curves, confusion matrix, reliability diagram, loss/AUC per epoch (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..calibration import expected_calibration_error, reliability_curve
from ..metrics import binary_auc, confusion_matrix


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score threshold, from (0, 0) to (1, 1)."""
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, y = np.asarray(scores)[order], positive[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def plot_roc(labels: np.ndarray, probs: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    """Binary: the positive class's curve; multi-class: one one-vs-rest curve per class present; multi-label
    (labels (n, L) of 0/1): one curve per label that has both values."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    multilabel = np.ndim(labels) == 2
    targets = range(probs.shape[1]) if multilabel or probs.shape[1] != 2 else [1]
    for c in targets:
        pos = labels[:, c] == 1 if multilabel else labels == c
        a = binary_auc(pos, probs[:, c])
        if a is None:
            continue
        fpr, tpr = roc_curve(pos, probs[:, c])
        ax.plot(fpr, tpr, label=f"{classes[c]} (AUC {100 * a:.1f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(labels: np.ndarray, probs: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    cm = confusion_matrix(labels, probs.argmax(axis=1), len(classes))
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2), dpi=120)
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(labels: np.ndarray, probs: np.ndarray, path: Path, title: str = "", bins: int = 15) -> None:
    """Accuracy vs mean confidence per confidence bin (bar width = bin, marker size ~ count), with the ECE."""
    points = reliability_curve(labels, probs, bins)
    fig, ax = plt.subplots(figsize=(4.2, 4), dpi=120)
    ax.plot([0, 1], [0, 1], "--", color="0.6", lw=1, label="perfectly calibrated")
    if points:
        n = sum(p["count"] for p in points)
        ax.bar([p["low"] for p in points], [p["accuracy"] for p in points], width=1 / bins, align="edge",
               alpha=0.35, edgecolor="C0", label="accuracy per bin")  # fmt: skip
        ax.scatter([p["confidence"] for p in points], [p["accuracy"] for p in points],
                   s=[20 + 300 * p["count"] / n for p in points], color="C0", zorder=3)  # fmt: skip
    ece = expected_calibration_error(labels, probs, bins)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title or 'reliability'}: ECE {100 * ece:.1f} %")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_cv(history: list[dict[str, Any]], path: Path) -> None:
    """A probe's cross-validation: the out-of-fold AUC per grid value (C or k)."""
    values = [h["value"] for h in history]
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=120)
    ax.plot(values, [100 * h["cv_auc"] if h["cv_auc"] is not None else np.nan for h in history], marker="o")
    if min(values) > 0 and max(values) / min(values) > 50:
        ax.set_xscale("log")
    ax.set_xlabel("hyper-parameter (C or k)")
    ax.set_ylabel("out-of-fold AUC (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Training and validation loss, validation AUC, per epoch (a probe's history: its cross-validation)."""
    if "cv_auc" in history[0]:
        plot_cv(history, path)
        return
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=120)
    a1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    a1.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy")
    a1.legend()
    aucs = [h.get("val_auc") for h in history]
    if any(a is not None for a in aucs):
        a2.plot(epochs, [100 * a if a is not None else np.nan for a in aucs], marker="o", color="C2")
    a2.set_xlabel("epoch")
    a2.set_ylabel("validation AUC (%)")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_run_plots(root: Path, history: list[dict[str, Any]], split: str, labels: np.ndarray, probs: np.ndarray,
                    classes: list[str]) -> list[Path]:  # fmt: skip
    """roc_SPLIT.png, confusion_SPLIT.png, reliability_SPLIT.png and (with a history) curves.png in a run folder."""
    written = [root / f"roc_{split}.png", root / f"confusion_{split}.png", root / f"reliability_{split}.png"]
    if np.ndim(labels) == 2:  # multi-label: per-label ROC (confusion and reliability are per-label tables)
        written = written[:1]
        plot_roc(labels, probs, classes, written[0], f"ROC per label ({split})")
        if history:
            written.append(root / "curves.png")
            plot_history(history, written[-1])
        return written
    plot_roc(labels, probs, classes, written[0], f"ROC ({split})")
    plot_confusion(labels, probs, classes, written[1], f"confusion matrix ({split})")
    plot_reliability(labels, probs, written[2], f"reliability ({split})")
    if history:
        written.append(root / "curves.png")
        plot_history(history, written[-1])
    return written
