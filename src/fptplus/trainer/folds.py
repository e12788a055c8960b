"""`fptplus train --folds K`: one run per fold over one feature store, and what the folds say together.

RUN/config.yaml, splits.csv (the fixed test split and the original train/val), classes.json, run.json ("folds": K)
RUN/store/                    built once from all images; every fold reads it (the store does not depend on splits)
RUN/fold-F/                   a complete run (config.yaml with data.fold = F): evaluate / predict / explain it
RUN/summary.json              test metrics mean ± std over folds × seeds, per-fold means, the cross-validated
                              (out-of-fold) validation metrics, and the test metrics of the folds' mean probabilities
RUN/oof_predictions.csv       every train+val image predicted by the fold that did not train on it (mean over seeds)
RUN/summary.md                the same as a table
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..data.folds import assign_folds
from ..files import write_json_atomic
from ..metrics import compute_metrics
from .runfolder import CLASSES_JSON, RUN_JSON, is_run, store_record

OOF_CSV = "oof_predictions.csv"


def fold_dir(root: Path, fold: int) -> Path:
    return root / f"fold-{fold}"


def train_folds(cfg, root: Path, index, seeds: list[int], resume: bool, log, callbacks, state,
                train) -> dict[str, Any]:  # fmt: skip
    """Trains fold 0..K-1 of `cfg` into RUN/fold-F (resuming finished and started folds) with `train` (the trainer's
    own entry point, passed in: a fold is a complete run), then summarises."""
    from .prepare import prepare_inputs, store_path

    k = cfg.data.folds
    folds = assign_folds(
        index.samples, k, cfg.data.split_seed, index.classes, index.strata()
    )  # refuses impossible folds first
    sizes = np.bincount([f for f in folds if f is not None], minlength=k).tolist()
    log(f"{k}-fold cross-validation over {sum(sizes)} train+val images (fold sizes {sizes}); test split fixed "
        f"({sum(s.split == 'test' for s in index.samples)} images)")  # fmt: skip
    store_at = store_path(cfg, root)
    if state.is_main_process:
        cfg.save(root / "config.yaml")
        index.write_csv(root / "splits.csv")
        write_json_atomic(root / CLASSES_JSON, index.classes)
        write_json_atomic(root / RUN_JSON, {"seeds": seeds, "store": store_record(store_at, root), "folds": k})
    state.wait_for_everyone()
    if store_at is not None:  # one store for every fold (online methods check their images in each fold)
        prepare_inputs(cfg, root, index, store_at, log)
    summaries = []
    for f in range(k):
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.data.fold = f
        if store_at is not None:
            fold_cfg.data.store = str(store_at.resolve())
        where = fold_dir(root, f)
        started = resume and is_run(where)
        log(f"== fold {f + 1}/{k} ({where}){' (continuing)' if started else ''}")
        # a fold folder without config.yaml was cut off before it started: ours to start over
        summaries.append(train(fold_cfg, where, seeds, resume=started, log=log, overwrite=resume and not started,
                               callbacks=[callbacks]))  # fmt: skip
    summary = summarise_folds(root, index.classes, k, seeds, cfg.data.ordinal, cfg.train.bootstrap, index.multilabel)
    if state.is_main_process:
        write_json_atomic(root / "summary.json", summary)
        (root / "summary.md").write_text(folds_markdown(root, cfg.method, summary), encoding="utf-8")
        log(folds_markdown(root, cfg.method, summary).split("\n", 2)[2])
    return summary


def _run_dirs(root: Path, k: int, seeds: list[int]) -> list[list[Path]]:
    """[fold][seed] folders holding results.json and the prediction tables."""
    return [[fold_dir(root, f) if len(seeds) == 1 else fold_dir(root, f) / f"seed-{s}" for s in seeds]
            for f in range(k)]  # fmt: skip


def read_predictions(
    path: Path, classes: list[str], multilabel: bool = False
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, labels (n,) or multi-label (n, L) 0/1, probabilities (n, C)) of a predictions_SPLIT.csv."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if multilabel:
        present = [set(r["label"].split(";")) for r in rows]
        labels = np.array([[c in p for c in classes] for p in present], dtype=np.int64).reshape(-1, len(classes))
    else:
        labels = np.array([classes.index(r["label"]) for r in rows], dtype=np.int64)
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=np.float64).reshape(-1, len(classes))
    return [r["path"] for r in rows], labels, probs


def _mean_over_seeds(
    dirs: list[Path], split: str, classes: list[str], multilabel: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A split's predictions averaged over the seeds of one fold (the rows are the same images in the same order)."""
    names, labels, probs = read_predictions(dirs[0] / f"predictions_{split}.csv", classes, multilabel)
    for d in dirs[1:]:
        other_names, _, p = read_predictions(d / f"predictions_{split}.csv", classes, multilabel)
        if other_names != names:
            raise RuntimeError(f"{d}: predictions_{split}.csv lists other images than {dirs[0]}")
        probs = probs + p
    return names, labels, probs / len(dirs)


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": values}  # fmt: skip


def summarise_folds(root: Path, classes: list[str], k: int, seeds: list[int], ordinal: bool = False,
                    bootstrap: int = 1000, multilabel: bool = False) -> dict[str, Any]:  # fmt: skip
    """summary.json of a cross-validation; writes RUN/oof_predictions.csv."""
    from .runfolder import read_results
    from .summary import SUMMARY_KEYS

    dirs = _run_dirs(root, k, seeds)
    results = [[read_results(d / "results.json") for d in fold] for fold in dirs]
    out: dict[str, Any] = {"folds": k, "seeds": seeds, "method": results[0][0]["method"],
                           "params": results[0][0]["params"], "test": {}, "test_fold_means": {}, "val": {}}  # fmt: skip
    for key in SUMMARY_KEYS:
        per = [[r["test"][key] for r in fold if r["test"].get(key) is not None] for fold in results]
        if all(per):
            out["test"][key] = _stats([v for fold in per for v in fold])
            out["test_fold_means"][key] = _stats([float(np.mean(fold)) for fold in per])
        val = [r["val"][key] for fold in results for r in fold if r["val"].get(key) is not None]
        if len(val) == k * len(seeds):
            out["val"][key] = _stats(val)
    rows, oof_labels, oof_probs = [], [], []
    for f, fold in enumerate(dirs):
        names, labels, probs = _mean_over_seeds(fold, "val", classes, multilabel)
        text = [";".join(c for c, b in zip(classes, y, strict=True) if b) if multilabel else classes[y] for y in labels]
        rows += [(n, t, f, p) for n, t, p in zip(names, text, probs, strict=True)]
        oof_labels.append(labels)
        oof_probs.append(probs)
    with open(root / OOF_CSV, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "fold", *(f"p_{c}" for c in classes)])
        w.writerows([n, y, f, *(f"{v:.6g}" for v in p)] for n, y, f, p in rows)
    labels, probs = np.concatenate(oof_labels), np.concatenate(oof_probs)
    out["oof"] = _metrics(labels, probs, ordinal)
    test = [_mean_over_seeds(fold, "test", classes, multilabel) for fold in dirs]
    if any(t[0] != test[0][0] for t in test):
        raise RuntimeError(f"the folds of {root} predicted different test images")
    ensemble = np.mean([t[2] for t in test], axis=0)
    m = compute_metrics(test[0][1], ensemble, float("nan"), ci=bootstrap > 0, ci_samples=bootstrap, ordinal=ordinal)
    out["test_ensemble"] = {k_: v for k_, v in m.to_dict().items() if k_ != "confusion"}
    if not multilabel and len(labels) and len(test[0][1]):  # calibrated on every train+val image, held out
        from ..calibration import clinical_report

        out["calibration"] = clinical_report(labels, probs, test[0][1], ensemble, ci_samples=bootstrap)
        out["calibration"]["fitted_on"] = f"the {len(labels)} out-of-fold predictions (every train+val image)"
    return out


def _metrics(labels: np.ndarray, probs: np.ndarray, ordinal: bool) -> dict[str, Any]:
    """Metrics of pooled predictions; the loss is the cross-entropy (multi-label: mean binary cross-entropy)."""
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    if labels.ndim == 2:
        loss = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    else:
        loss = float(-np.mean(np.log(p[np.arange(len(labels)), labels])))
    m = compute_metrics(labels, probs, loss, ordinal=ordinal)
    return {k: v for k, v in m.to_dict().items() if k != "confusion"}


def folds_markdown(root: Path, method: str, summary: dict[str, Any]) -> str:
    """RUN/summary.md of a cross-validation."""

    def pm(stats: dict[str, Any] | None) -> str:
        return "n/a" if stats is None else f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}"

    k, seeds = summary["folds"], summary["seeds"]
    test_auc = summary["test"].get("auc")
    val_auc = summary["val"].get("auc")
    lines = [f"# {root.name}", "", f"{method}, {k}-fold cross-validation (patient-grouped, class-stratified), seeds "
             f"{', '.join(map(str, seeds))}; the test split is the same for every fold.", "",
             "| fold | val AUC | test AUC |", "|---|---|---|"]  # fmt: skip
    n = len(seeds)
    for f in range(k):
        v = val_auc["values"][f * n : (f + 1) * n] if val_auc else None
        t = test_auc["values"][f * n : (f + 1) * n] if test_auc else None
        lines.append(f"| {f} | {pct(float(np.mean(v))) if v else 'n/a'} | {pct(float(np.mean(t))) if t else 'n/a'} |")
    ens = summary["test_ensemble"]
    ci = ens.get("auc_ci")
    ci_text = f" ({100 * ci[0]:.2f}–{100 * ci[1]:.2f})" if ci else ""
    lines += ["", f"- test AUC over {k} folds × {n} seed(s): **{pm(test_auc)}** (std of the fold means: "
              f"{pm(summary['test_fold_means'].get('auc')).split(' ± ')[1]})",
              f"- cross-validated AUC (out-of-fold predictions of the train+val images, pooled): "
              f"**{pct(summary['oof'].get('auc'))}**; per-fold val AUC {pm(val_auc)}",
              f"- test AUC of the {k} fold models' mean probabilities: **{pct(ens.get('auc'))}**{ci_text}",
              *_calibration_line(summary.get("calibration")), "",
              f"Per fold: fold-F/ (each a complete run); out-of-fold predictions: {OOF_CSV}.", ""]  # fmt: skip
    return "\n".join(lines)


def _calibration_line(report: dict[str, Any] | None) -> list[str]:
    if not report:
        return []
    ece, scaled = report["ece"]["test"], report["ece_temperature_scaled"]["test"]
    if report["temperature"] == 1.0:
        return [f"- calibration of the ensemble: test ECE {100 * ece:.2f} %; temperature {report['temperature_note']}"]
    return [f"- calibration of the ensemble, temperature {report['temperature']:.3f} fitted on {report['fitted_on']}: "
            f"test ECE {100 * ece:.2f} -> {100 * scaled:.2f} %"]  # fmt: skip


def fold_count(root: Path) -> int | None:
    """K of a cross-validation run folder (run.json "folds"), else None."""
    from .runfolder import read_run_info

    if not (root / RUN_JSON).exists():
        return None
    folds = read_run_info(root).get("folds")
    return folds if isinstance(folds, int) else None
