"""Is run A better than run B? A paired bootstrap of the test-AUC difference (`fptplus compare`).

Both runs must have predicted the same images with the same labels (rows are matched by path). The compared
quantity is what a results table shows: the AUC of each seed, averaged over the run's seeds. Each bootstrap
resample draws the images with replacement once and scores every seed of both runs on it, so the interval of
the difference carries the test set's sampling noise paired across the runs (the images both got right or
wrong cancel), not the seeds' spread, which is reported beside it. `seeds=True` (`--resample-seeds`) also draws
each run's seeds with replacement in every resample (a two-level bootstrap: images, then training runs), so the
interval carries the training chaos too — the question "is this setting better, or did these seeds land well?"
(with one seed per run it is the images-only interval, draw for draw).

Data flow: predictions_SPLIT.csv of every seed of A (S_a files) and B (S_b files)
  -> labels (n,), probabilities A (S_a, n, C), B (S_b, n, C)   (multi-label: labels (n, L), probabilities (.., L))
  -> per resample r: idx (n,) [seed draws sa (S_a,), sb (S_b,)] -> mean_s AUC(A_sa[idx]) - mean_s AUC(B_sb[idx])
  -> percentile interval.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import RunError
from .files import display
from .metrics import auc

PREDICTIONS = "predictions_{split}.csv"


@dataclass
class RunPredictions:
    """One run's predictions on a split: paths (n,), labels (n,) or (n, L), probabilities (S, n, C)."""

    folder: str
    seeds: list[str]
    classes: list[str]
    paths: list[str]
    labels: np.ndarray
    probs: np.ndarray
    multilabel: bool


def prediction_files(folder: Path, split: str) -> list[Path]:
    """The predictions of a run folder: its own file (one seed), else one per seed-*/ sub-folder."""
    name = PREDICTIONS.format(split=split)
    if not folder.is_dir():
        raise RunError(f"{display(folder)} is not a folder; pass a run folder made by `fptplus train`")
    if (folder / name).exists():
        return [folder / name]
    files = sorted(folder.glob(f"seed-*/{name}"), key=lambda p: p.parent.name)
    if files:
        return files
    if any(folder.glob("fold-*")):
        raise RunError(f"{display(folder)} is a cross-validation: compare one fold (FOLDER/fold-F), whose test "
                       f"predictions are a complete run's")  # fmt: skip
    raise RunError(f"{display(folder)} has no {name} (nor seed-*/{name}): not a finished run, or the split was never "
                   f"evaluated there — run `fptplus evaluate {display(folder)} --split {split}` first")  # fmt: skip


def _label_columns(folder: Path) -> list[str]:
    """The run's multi-label columns from its config.yaml (empty for single-label runs or without a config)."""
    for path in (folder / "config.yaml", folder.parent / "config.yaml"):
        if path.exists():
            try:
                cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                return []
            data = cfg.get("data") if isinstance(cfg, dict) else None
            return list((data or {}).get("label_columns") or [])
    return []


def _read_csv(path: Path) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """(paths, label texts, classes, probabilities (n, C)) of one predictions CSV, checked."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RunError(f"{display(path)} cannot be read ({err}); re-create it with `fptplus evaluate`") from err
    fix = "re-create it with `fptplus evaluate`"
    if not rows or "path" not in rows[0] or "label" not in rows[0]:
        raise RunError(f"{display(path)} is empty or lacks the path/label columns; {fix}")
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    if len(set(header)) != len(header):
        raise RunError(f"{display(path)}: its header names a column twice ({header}); {fix}")
    blank = next((i + 2 for i, r in enumerate(rows) if not r.get("path") or r.get("label") is None), None)
    if blank is not None:
        raise RunError(f"{display(path)}: line {blank} has no path or no label (a damaged file); {fix}")
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    try:
        probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise RunError(f"{display(path)} has a probability that is missing or not a number ({err}); {fix}") from None
    if not np.isfinite(probs).all():
        raise RunError(f"{display(path)} holds NaN or infinite probabilities: no AUC can be computed; {fix}")
    return [r["path"] for r in rows], [r["label"] for r in rows], classes, probs.reshape(len(rows), len(classes))


def read_run_predictions(folder: str | Path, split: str = "test") -> RunPredictions:
    """Every seed's predictions of a run on `split`, rows in the first seed's order (checked to agree)."""
    folder = Path(folder)
    files = prediction_files(folder, split)
    paths, texts, classes, first = _read_csv(files[0])
    if len(set(paths)) != len(paths):
        raise RunError(f"{display(files[0])} lists an image twice; re-create it with `fptplus evaluate`")
    multilabel = bool(_label_columns(folder)) or any(t not in classes for t in texts)
    if multilabel:
        present = [set(filter(None, t.split(";"))) for t in texts]
        unknown = sorted(set().union(*present) - set(classes))
        if unknown:
            raise RunError(f"{display(files[0])}: labels {unknown} are not among its classes {classes}")
        labels = np.array([[c in p for c in classes] for p in present], dtype=np.int64).reshape(-1, len(classes))
    else:
        labels = np.array([classes.index(t) for t in texts], dtype=np.int64)
    probs = [first]
    for path in files[1:]:
        other_paths, other_texts, other_classes, p = _read_csv(path)
        if other_classes != classes or set(zip(other_paths, other_texts, strict=True)) != set(
            zip(paths, texts, strict=True)
        ):
            raise RunError(f"{display(path)} predicts other images, labels or classes than {display(files[0])}: the "
                           f"seeds of one run must share their split")  # fmt: skip
        order = {q: i for i, q in enumerate(other_paths)}
        probs.append(p[[order[q] for q in paths]])
    seeds = [f.parent.name if f.parent != folder else "seed" for f in files]
    return RunPredictions(str(folder), seeds, classes, paths, labels, np.stack(probs), multilabel)


def align(a: RunPredictions, b: RunPredictions) -> RunPredictions:
    """`b` with its rows in `a`'s order; refuses runs that predicted other images, labels or classes."""
    if a.classes != b.classes or a.multilabel != b.multilabel:
        raise RunError(f"{b.folder} has classes {b.classes} and {a.folder} has {a.classes}: only runs of the same "
                       f"task can be compared")  # fmt: skip
    missing, extra = sorted(set(a.paths) - set(b.paths)), sorted(set(b.paths) - set(a.paths))
    if missing or extra:
        raise RunError(f"{a.folder} and {b.folder} predicted different images ({len(missing)} only in the first, "
                       f"e.g. {(missing or extra)[:3]}; {len(extra)} only in the second): compare runs evaluated on "
                       f"the same split of the same data (same --split-seed, fractions and split column)")  # fmt: skip
    order = {p: i for i, p in enumerate(b.paths)}
    idx = np.array([order[p] for p in a.paths])
    labels = b.labels[idx]
    differ = np.nonzero((labels != a.labels).reshape(len(idx), -1).any(axis=1))[0]
    if len(differ):
        raise RunError(f"{a.folder} and {b.folder} give different labels to {len(differ)} images (e.g. "
                       f"{a.paths[differ[0]]}): the runs were trained on different label files")  # fmt: skip
    return RunPredictions(b.folder, b.seeds, b.classes, list(a.paths), labels, b.probs[:, idx], b.multilabel)


def mean_seed_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean over seeds of the AUC; probs (S, n, C). None when the labels hold a single class."""
    values = [auc(labels, p)[0] for p in probs]
    return None if any(v is None for v in values) else float(np.mean(values))


@dataclass
class Comparison:
    """A − B in test-AUC points (×100), paired over the same images."""

    a: str
    b: str
    split: str
    n: int
    seeds_a: int
    seeds_b: int
    auc_a: float
    auc_b: float
    std_a: float
    std_b: float
    difference: float
    ci: tuple[float, float]
    ci_a: tuple[float, float]
    ci_b: tuple[float, float]
    p_value: float
    samples: int
    level: float
    seeds_resampled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        pct = f"{100 * self.level:g} %"
        verdict = (f"A is better (the {pct} interval excludes 0)" if self.ci[0] > 0 else
                   f"B is better (the {pct} interval excludes 0)" if self.ci[1] < 0 else
                   f"no difference shown: the {pct} interval contains 0")  # fmt: skip
        return "\n".join([
            f"{self.split} split, {self.n} images; AUC = mean over a run's seeds; paired bootstrap over images"
            f"{' and, per run, its seeds' if self.seeds_resampled else ''} ({self.samples} resamples)",
            f"A  {self.a}: {self.auc_a:.2f} ± {self.std_a:.2f} over {self.seeds_a} seed(s), {pct} CI "
            f"{self.ci_a[0]:.2f}–{self.ci_a[1]:.2f}",
            f"B  {self.b}: {self.auc_b:.2f} ± {self.std_b:.2f} over {self.seeds_b} seed(s), {pct} CI "
            f"{self.ci_b[0]:.2f}–{self.ci_b[1]:.2f}",
            f"A − B: {self.difference:+.2f} AUC points, {pct} CI {self.ci[0]:+.2f} to {self.ci[1]:+.2f}, two-sided "
            f"bootstrap p = {self.p_value:.3f} — {verdict}",
        ])  # fmt: skip


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def compare(a: RunPredictions, b: RunPredictions, split: str = "test", samples: int = 2000, seed: int = 0,
            level: float = 0.95, seeds: bool = False) -> Comparison:  # fmt: skip
    """Paired bootstrap of mean-over-seeds AUC(a) − AUC(b); `b` is aligned to `a` first. seeds: also resample each
    run's seeds (a separate random stream, so the image draws are the same as without it)."""
    if samples < 100:
        raise RunError(f"--samples {samples} is too few for a {100 * level:g} % interval; use at least 100 "
                       f"(2000 default)")  # fmt: skip
    if not 0 < level < 1:
        raise RunError(f"--level must be between 0 and 1 (e.g. 0.95), got {level}")
    b = align(a, b)
    labels = a.labels
    per_a = [auc(labels, p)[0] for p in a.probs]
    per_b = [auc(labels, p)[0] for p in b.probs]
    if any(v is None for v in per_a + per_b):
        raise RunError(f"the {split} split holds a single class (or a label without both values): AUC is undefined")
    rng, seed_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    diffs, va, vb = [], [], []
    n, s_a, s_b = len(labels), len(per_a), len(per_b)
    while len(diffs) < samples:
        idx = rng.integers(0, n, n)
        pa, pb = a.probs, b.probs
        if seeds:  # (S_a,), (S_b,) seed draws with replacement
            pa, pb = pa[seed_rng.integers(0, s_a, s_a)], pb[seed_rng.integers(0, s_b, s_b)]
        x, y = mean_seed_auc(labels[idx], pa[:, idx]), mean_seed_auc(labels[idx], pb[:, idx])
        if x is None or y is None:  # a resample with one class: skipped, as bootstrap_auc_ci does
            continue
        va.append(x)
        vb.append(y)
        diffs.append(x - y)
    d = 100 * np.asarray(diffs)
    p_value = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))

    def std(v: list[float]) -> float:
        return float(100 * np.std(v, ddof=1)) if len(v) > 1 else 0.0

    return Comparison(
        a=a.folder, b=b.folder, split=split, n=n, seeds_a=len(per_a), seeds_b=len(per_b),
        auc_a=100 * float(np.mean(per_a)), auc_b=100 * float(np.mean(per_b)), std_a=std(per_a), std_b=std(per_b),
        difference=100 * (float(np.mean(per_a)) - float(np.mean(per_b))), ci=_percentile(d, level),
        ci_a=_percentile(100 * np.asarray(va), level), ci_b=_percentile(100 * np.asarray(vb), level),
        p_value=p_value, samples=samples, level=level, seeds_resampled=seeds,
    )  # fmt: skip
