"""Trivial-feature baselines: how well does each family of features that carry no lesion information — colour and
intensity statistics, the coarse layout of a tiny thumbnail, image size, file format, acquisition metadata —
separate the labels? A cross-validated logistic regression per family (folds never split a group), scored by the
AUC of its out-of-fold probabilities with a bootstrap CI.

A family that separates the labels well is a shortcut a model can learn instead of the disease (a scanner, a
hospital, a resizing step, a burnt-in marker). Families are built from `features.ImageFacts` and thumbnails only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..metrics import auc, binary_auc, bootstrap_auc_ci, pair_auc
from .features import ImageFacts

FAMILIES = {
    "intensity": "colour / intensity statistics of a 64 px thumbnail (per-channel mean, std, percentiles; grey "
    "histogram; colourfulness; dark and bright fractions)",
    "layout": "8 × 8 grey thumbnail (where bright and dark regions lie: borders, markers, collimation)",
    "size": "width, height, aspect ratio, pixel count, file size, bytes per pixel",
    "format": "file format, colour mode, bit depth, file extension",
    "metadata": "acquisition tags: EXIF make / model / software; DICOM manufacturer, model, institution, "
    "photometric interpretation, modality, pixel spacing",
    "names": "file and folder names and the group column: their words (the class names left out) and numbers "
    "(an id or acquisition order that follows the label)",
}


def _intensity(thumbs: np.ndarray) -> np.ndarray:
    x = thumbs.astype(np.float64) / 255.0  # (n, 64, 64, 3)
    flat = x.reshape(len(x), -1, 3)
    grey = flat.mean(2)
    stats = [flat.mean(1), flat.std(1), *(np.percentile(flat, q, axis=1) for q in (5, 25, 50, 75, 95))]
    hist = np.stack([np.histogram(g, bins=16, range=(0, 1))[0] / g.size for g in grey])
    colour = np.stack([np.abs(flat[..., 0] - flat[..., 1]).mean(1), np.abs(flat[..., 1] - flat[..., 2]).mean(1)], 1)
    extremes = np.stack([(grey < 0.04).mean(1), (grey > 0.96).mean(1)], 1)
    return np.concatenate([*stats, hist, colour, extremes], 1)


def _layout(thumbs: np.ndarray) -> np.ndarray:
    grey = thumbs.astype(np.float64).mean(3) / 255.0  # (n, 64, 64)
    return grey.reshape(len(grey), 8, 8, 8, 8).mean((2, 4)).reshape(len(grey), 64)


def _size(facts: list[ImageFacts]) -> np.ndarray:
    w = np.array([max(f.width, 1) for f in facts], np.float64)
    h = np.array([max(f.height, 1) for f in facts], np.float64)
    b = np.array([max(f.size, 1) for f in facts], np.float64)
    return np.stack([w, h, w / h, np.log10(w * h), np.log10(b), b / (w * h)], 1)


def _one_hot(values: list[tuple[str, ...]]) -> np.ndarray:
    """One column per (field, value) seen in at least one image."""
    columns = sorted({(k, v) for row in values for k, v in enumerate(row)})
    at = {c: j for j, c in enumerate(columns)}
    out = np.zeros((len(values), len(columns)))
    for i, row in enumerate(values):
        for k, v in enumerate(row):
            out[i, at[(k, v)]] = 1
    return out


def _format(facts: list[ImageFacts]) -> np.ndarray:
    return _one_hot([(f.format, f.mode, str(f.bits), f.path.rsplit(".", 1)[-1].lower()) for f in facts])


def _metadata(facts: list[ImageFacts]) -> np.ndarray:
    keys = sorted({k for f in facts for k in f.meta if k != "PixelSpacing"})
    cat = _one_hot([tuple(f.meta.get(k, "") for k in keys) for f in facts]) if keys else np.zeros((len(facts), 0))
    spacing = [f.meta.get("PixelSpacing") for f in facts]
    if any(spacing):
        num = np.array([[float(s) if s else 0.0, float(bool(s))] for s in spacing])
        cat = np.concatenate([cat, num], 1)
    return cat


def _tokens(text: str) -> list[str]:
    return [t.lower() for t in re.findall(r"[A-Za-z]+|\d+", text)]


def _names(facts: list[ImageFacts], groups: list[str], classes: list[str], top: int = 200) -> np.ndarray:
    """Words (one column each, the `top` most frequent) and numbers (first, last, largest: value and log) of each
    image's path and group; the words of the class names are left out (a class folder is the label itself)."""
    banned = {t for c in classes for t in _tokens(c)}
    texts = [f"{f.path} {g}" for f, g in zip(facts, groups, strict=True)]
    words = [[t for t in _tokens(x) if not t.isdigit() and t not in banned] for x in texts]
    counts: dict[str, int] = {}
    for ws in words:
        for w in set(ws):
            counts[w] = counts.get(w, 0) + 1
    vocab = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if 1 < c < len(facts)][:top]
    at = {w: j for j, w in enumerate(vocab)}
    bag = np.zeros((len(facts), len(vocab)))
    for i, ws in enumerate(words):
        for w in ws:
            if w in at:
                bag[i, at[w]] = 1
    numbers = []
    for x in texts:
        values = [float(t) for t in _tokens(x) if t.isdigit()] or [0.0]
        picks = [values[0], values[-1], max(values)]
        numbers.append([*picks, *np.log1p(picks), float(len(values))])
    return np.concatenate([bag, np.array(numbers)], 1)


def family_features(facts: list[ImageFacts], thumbs: np.ndarray, groups: list[str] | None = None,
                    classes: list[str] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """(n, d) features per family (d may be 0: the family holds nothing, e.g. no metadata). `groups`: the dataset's
    group column per image ("" when none) for the names family."""
    out = {"intensity": _intensity(thumbs), "layout": _layout(thumbs), "size": _size(facts),
           "format": _format(facts), "metadata": _metadata(facts)}  # fmt: skip
    out["names"] = _names(facts, groups if groups is not None else [""] * len(facts), classes or [])
    return out


@dataclass
class FamilyResult:
    """Out-of-fold probabilities of one family and what they say."""

    family: str
    probs: np.ndarray | None  # (n, C) out-of-fold probabilities; None when the family is constant
    auc: float | None
    auc_ci: tuple[float, float] | None
    per_class: dict[str, float | None]  # one-vs-rest AUC per class (multi-class)
    pairs: dict[str, float | None]  # "a vs b" AUC per pair of classes (multi-class)
    note: str = ""

    def to_dict(self) -> dict:
        return {"family": self.family, "what": FAMILIES[self.family], "auc": self.auc, "auc_ci": self.auc_ci,
                "per_class": self.per_class, "pairs": self.pairs, "note": self.note}  # fmt: skip


def cv_probs(x: np.ndarray, y: np.ndarray, groups: list[str], folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities (n, C) of a standardised logistic regression, folds stratified and group-disjoint."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = np.unique(y)
    k = max(2, min(folds, int(np.bincount(y).min()) if len(classes) else 2, len(set(groups))))
    out = np.zeros((len(y), len(classes)))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y, groups):
        if len(np.unique(y[train])) < len(classes):  # a fold without a class: predict the training prior
            out[test] = np.bincount(y[train], minlength=len(classes)) / len(train)
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(x[train], y[train])
        out[test] = model.predict_proba(x[test])
    return out


def evaluate_family(name: str, x: np.ndarray, y: np.ndarray, groups: list[str], classes: list[str],
                    bootstrap: int = 500, seed: int = 0) -> FamilyResult:  # fmt: skip
    """One family's cross-validated AUC (binary: positive class; multi-class: macro one-vs-rest), per class and pair."""
    informative = x.shape[1] > 0 and bool((x.std(0) > 1e-12).any())
    if not informative:
        what = "not present in these files" if x.shape[1] == 0 else "the same for every image"
        return FamilyResult(name, None, None, None, {}, {}, f"{what}: cannot separate anything")
    probs = cv_probs(x, y, groups, seed=seed)
    value, note = auc(y, probs)
    ci = bootstrap_auc_ci(y, probs, bootstrap, seed) if bootstrap else None
    per_class, pairs = {}, {}
    if len(classes) > 2:
        per_class = {c: binary_auc(y == j, probs[:, j]) for j, c in enumerate(classes)}
        pairs = {f"{classes[a]} vs {classes[b]}": pair_auc(y, probs, a, b)
                 for a in range(len(classes)) for b in range(a + 1, len(classes))}  # fmt: skip
    return FamilyResult(name, probs, value, ci, per_class, pairs, note or "")


def run_baselines(
    facts: list[ImageFacts],
    thumbs: np.ndarray,
    labels: np.ndarray,
    groups: list[str],
    classes: list[str],
    log: Callable[[str], None] = print,
    bootstrap: int = 500,
    group_column: list[str] | None = None,
) -> list[FamilyResult]:
    """Every family on the decodable images (`labels` (n,) class indices; `groups` the CV groups; `group_column` the
    dataset's own group values, "" where none, for the names family)."""
    out = []
    for name, x in family_features(facts, thumbs, group_column, classes).items():
        r = evaluate_family(name, x, labels, groups, classes, bootstrap)
        shown = f"{100 * r.auc:.1f}" if r.auc is not None else r.note
        log(f"audit: {name:9s} AUC {shown}")
        out.append(r)
    return out
