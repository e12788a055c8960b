"""One probe run (`--method linear` / `knn`): the frozen features once, the hyper-parameter by cross-validation on
train + val, the fit, then what every run writes.

    features   from the feature store (seconds), or one un-augmented forward per image (online)
    CV         patient-grouped, class-stratified folds of the fit rows (`data.folds.assign_folds`, seeded by the run
               seed); every grid value scored by the AUC of its pooled out-of-fold predictions
    fit        on every fit row at the chosen value (train + val; train only inside an outer `--folds` run, whose
               val must stay held out)
    outputs    checkpoints/{best,last}, predictions_{val,test}.csv, results.json (val: the out-of-fold predictions
               of the val images when val was fitted on; test with its CI; calibration fitted on the out-of-fold
               predictions), metrics.csv (the CV table), plots — the run folder evaluate / predict / compare / app read
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..data.folds import assign_folds
from ..data.sources import DataIndex
from ..errors import ConfigError, DataError, DivergedError
from ..files import human_bytes
from ..logs import Progress, get_logger, info_of, showing_info
from ..methods import get_method
from ..methods.probe_fit import task_of
from ..metrics import compute_metrics
from ..store.reader import FeatureStore
from .callbacks import Callback, Callbacks, RunInfo
from .checkpoint import CALIBRATION_FILE, checkpoint_bytes, read_meta, save_checkpoint, write_calibration
from .inputs import eval_loader, make_inputs
from .loop import FitResult, calibration_report, memory_report, seed_everything, write_split_predictions
from .objective import Objective
from .outputs import RunPaths, write_history

_log = get_logger("train")
SPLITS = ("train", "val", "test")


@torch.no_grad()
def features_of(model: Any, dataset: Any, batch_size: int, workers: int, log: Callable[[str], None],
                what: str) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(features (n, F) float64, labels (n,) int64: class index or multi-label bitmask) of a dataset, in order."""
    feats, labels = [], []
    loader = eval_loader(dataset, batch_size, workers)
    bar = Progress(len(loader), f"features ({what})", log, showing_info(), seconds=30, unit="batches")
    for i, batch in enumerate(loader):
        x = batch["pooled"] if "pooled" in batch else model.pooled(batch["image"])  # (B, F)
        feats.append(x.double())
        labels.append(torch.as_tensor(batch["label"]))
        bar.update(i + 1)
    bar.close()
    if not feats:
        return torch.zeros(0, model.feature_dim, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


def inner_folds(index: DataIndex, ids: list[int], k: int, seed: int, log: Callable[[str], None]) -> list[int]:
    """The fold of every fit row: `assign_folds` on those rows (groups kept together, classes stratified), with
    fewer folds when a class has fewer than `k` images or groups."""
    samples = [dataclasses.replace(index.samples[i], split="train") for i in ids]
    strata = index.strata()
    strata = [strata[i] for i in ids]
    for folds in range(k, 1, -1):
        try:
            out = assign_folds(samples, folds, seed, index.classes, strata)
        except DataError:
            continue
        if folds < k:
            log(f"note: {folds}-fold cross-validation instead of {k} (a class has fewer than {k} images or groups in "
                "the fit rows)")  # fmt: skip
        return [int(f) for f in out]
    raise DataError(
        f"cannot cross-validate the probe: a class has fewer than 2 images or groups in the {len(ids)} fit rows; "
        "add images of it, or use a gradient-trained method (e.g. --method linear_adamw)"
    )


def _loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Cross-entropy (binary cross-entropy per label for multi-label) of probabilities, as the trainer reports it."""
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    if labels.ndim == 2:
        return float(-(labels * np.log(p) + (1 - labels) * np.log1p(-p)).mean()) if len(labels) else float("nan")
    return float(-np.log(p[np.arange(len(labels)), labels]).mean()) if len(labels) else float("nan")


def fit_probe(
    cfg: RunConfig,
    root: Path,
    index: DataIndex,
    store: FeatureStore | None,
    usable: list[int],
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    callbacks: Callback | None = None,
) -> FitResult:
    """Fits one seed of a probe into `root` (a rerun refits: it takes seconds from a store), then evaluates it.

    Arguments as `fptplus.trainer.loop.fit`; `resume` changes nothing (there is no partial state to continue).
    """
    paths, tc, method = RunPaths(root), cfg.train, get_method(cfg.method)
    log = info_of(_log, log)
    events = Callbacks([callbacks] if callbacks is not None else [])
    if tc.class_weights is not None:
        raise ConfigError(f"--method {cfg.method} weighs every image equally (its AUC does not depend on class "
                          "weights); drop --class-weights")  # fmt: skip
    seed_everything(tc.seed)
    model = method.build(cfg.model, source="store" if store is not None else "online").eval()
    inputs = make_inputs(method, model, cfg.model, index, store, usable, tc.seed, cfg.data.geometry)
    objective = Objective(len(index.classes) if index.multilabel else None)
    source = "from the feature store" if store is not None else "online (one un-augmented forward per image)"
    log(f"{cfg.method}: features {cfg.model.features} {source}; {len(inputs.train)} train / {len(inputs.val)} val / "
        f"{len(inputs.test)} test images")  # fmt: skip
    t0 = time.perf_counter()
    bs = tc.eval_batch_size or 2 * tc.batch_size
    feats = {s: features_of(model, getattr(inputs, s), bs, tc.num_workers, log, s) for s in SPLITS}
    feature_seconds = time.perf_counter() - t0
    for split, (x_split, _) in feats.items():
        if not torch.isfinite(x_split).all():
            where = f"the feature store {store.path}" if store is not None else "the frozen model's forward"
            bad = int((~torch.isfinite(x_split)).any(1).sum())
            raise DivergedError(f"run {root}: {bad} {split} images have NaN/inf features from {where}; check it "
                                "(`fptplus preload ... --verify`) or rebuild it")  # fmt: skip

    fit_splits = ("train",) if cfg.data.fold is not None else ("train", "val")  # an outer fold's val stays held out
    ids = [i for s in fit_splits for i in getattr(inputs, s).indices]
    x = torch.cat([feats[s][0] for s in fit_splits])  # (n, F)
    y = objective.targets(torch.cat([feats[s][1] for s in fit_splits]))  # (n,) or (n, L)
    folds = inner_folds(index, ids, cfg.model.cv_folds, tc.seed, log)
    task = task_of(y.numpy(), len(index.classes))
    t1 = time.perf_counter()
    fitted = method.fitter(cfg.model, x, y, folds, task, len(index.classes))
    fitted.load(model.head)
    fit_seconds = time.perf_counter() - t1
    cv = fitted.cv
    name = "C" if "C" in fitted.details else "k"
    log(f"cross-validation ({cv.folds} folds, {len(ids)} {'+'.join(fit_splits)} images), out-of-fold AUC per {name}: "
        + ", ".join(f"{v:g}: {100 * s:.2f}" if s is not None else f"{v:g}: n/a" for v, s in zip(cv.grid, cv.scores,
                                                                                               strict=True))
        + f" -> {name} = {cv.best:g}; fitted in {fit_seconds:.1f} s")  # fmt: skip
    for note in cv.notes:
        log(f"note: {note}")

    run = RunInfo(root, cfg, list(index.classes), model.param_count())
    events.on_fit_start(run)
    meta = {"method": cfg.method, "backbone": cfg.model.backbone, "num_classes": cfg.model.num_classes,
            "classes": list(index.classes), "epoch": 1, "selection": "cv AUC",
            "score": max(s for s in cv.scores if s is not None)}  # fmt: skip
    save_checkpoint(paths.best, model, meta)
    save_checkpoint(paths.last, model, meta)
    history = [{"epoch": i + 1, "value": v, "cv_auc": s} for i, (v, s) in enumerate(zip(cv.grid, cv.scores,
                                                                                        strict=True))]  # fmt: skip
    write_history(root, history)

    oof = dict(zip(ids, cv.oof_probs, strict=True))
    out, split_probs = {}, {}
    for split in ("val", "test"):
        ds = getattr(inputs, split)
        labels = objective.targets(feats[split][1]).numpy()
        if split in fit_splits:  # held-out predictions: each val image from the fold model that did not see it
            probs = np.array([oof[i] for i in ds.indices]).reshape(len(ds), -1)
        else:
            with torch.no_grad():
                probs = objective.probs(model(feats[split][0].float())).double().numpy()
        split_probs[split] = labels, probs
        m = compute_metrics(labels, probs, _loss(labels, probs), ci=split == "test" and tc.bootstrap > 0,
                            ci_samples=tc.bootstrap, seed=tc.seed, ordinal=cfg.data.ordinal)  # fmt: skip
        out[split] = m.to_dict()
        log(f"{cfg.method} ({name} = {cv.best:g}) on {split}{' (out-of-fold)' if split in fit_splits else ''}: "
            f"{m.summary()}")  # fmt: skip
        if len(labels):
            events.on_evaluated(run, split, labels, probs, history)
            write_split_predictions(paths.root / f"predictions_{split}.csv", ds, labels, probs, list(index.classes))
    fit_labels = y.numpy()
    calibration = None
    if not objective.multilabel and len(split_probs["test"][0]):  # fitted on every fit row's out-of-fold prediction
        calibration = calibration_report({"val": (fit_labels, cv.oof_probs), "test": split_probs["test"]}, tc, log)
    params = model.param_count()
    results = {
        "method": cfg.method,
        "seed": tc.seed,
        "source": inputs.source,
        "classes": list(index.classes),
        "best_epoch": 1,
        "selection": "cv AUC",
        "params": {"trainable": params.trainable, "total": params.total, "percent": params.percent},
        "checkpoint_bytes": checkpoint_bytes(paths.best),
        "epoch_seconds": feature_seconds + fit_seconds,
        "val": out["val"],
        "test": out["test"],
        "calibration": calibration,
        "probe": {
            "features": cfg.model.features,
            "fit_splits": list(fit_splits),
            "fit_images": len(ids),
            "cv_folds": cv.folds,
            "cv_auc": max(s for s in cv.scores if s is not None),
            "grid": cv.table(),
            "val_metrics": "out-of-fold" if "val" in fit_splits else "held out",
            "calibration_fitted_on": f"out-of-fold predictions of {len(ids)} {'+'.join(fit_splits)} images",
            "feature_seconds": feature_seconds,
            "fit_seconds": fit_seconds,
            **fitted.details,
        },
        **memory_report(cfg, inputs.source),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    paths.results.write_text(json.dumps(results, indent=1))
    if calibration is not None:
        write_calibration(paths.root / CALIBRATION_FILE, calibration, read_meta(paths.best))
    log(f"checkpoint {paths.best / 'model.safetensors'}: {human_bytes(results['checkpoint_bytes'])}; results in "
        f"{paths.results}")  # fmt: skip
    events.on_fit_end(run, results)
    return FitResult(results, history)
