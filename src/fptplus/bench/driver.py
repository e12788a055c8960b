"""`fptplus bench plan`: run a benchmark plan (see `plan.py`), keep one record per run, render its tables.

Each run is `fptplus train` (in this process, through `fptplus.workflow`) into RUNS/<folder>; FPT/FPT+
runs of one method and resolution share one feature store (RUNS/store-<method>-<size>); a probe row with
`features: ROW` reads the pooled features of ROW's store at the same resolution. Finished runs (a results.json per
seed) are skipped, interrupted ones continue with `--resume`.

The records (RESULTS/runs.json, committed) are the source of truth of the tables: one per run, with its AUCs per
seed as measured, its resolved model config, and where and when it ran. A run folder that exists refreshes its
record; a plan whose run folders are gone (another machine, a cleaned disk) still renders from the records.
Memory columns are recomputed at every render with the current accounting (meta device, steady-state step).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError
from ..files import read_json, write_json_atomic
from ..logs import get_logger, info_of
from ..metrics import pair_auc
from .plan import Plan, Run

_log = get_logger("bench")


RECORDS = "runs.json"


def seed_dirs(run_dir: Path, run: Run) -> list[Path]:
    return [run_dir] if len(run.seeds) == 1 else [run_dir / f"seed-{s}" for s in run.seeds]


def finished(run_dir: Path, run: Run) -> bool:
    return all((d / "results.json").exists() for d in seed_dirs(run_dir, run))


def cv_dir(runs: Path, run: Run) -> Path:
    """Where a `cv_folds` row's cross-validation of one learning rate lives (RUNS/cv/<folder>/fold-F)."""
    return runs / "cv" / run.folder


def cv_aucs(runs: Path, run: Run) -> list[float] | None:
    """Each fold's validation AUC of a finished cross-validation (None: not finished)."""
    path = cv_dir(runs, run) / "summary.json"
    if not path.exists():
        return None
    auc = read_json(path, ConfigError).get("val", {}).get("auc")
    return [float(v) for v in auc["values"]] if auc else None


def cv_group(plan: Plan, run: Run) -> list[Run]:
    """The runs cross-validation chooses between: the row's learning rates at the run's resolution."""
    return [o for o in plan.runs if o.group == run.group and o.cv_folds]


def cv_winner(plan: Plan, runs: Path, run: Run) -> Run | None:
    """The learning rate of `run`'s row and resolution with the best mean fold validation AUC (None until every
    learning rate's cross-validation has finished)."""
    scores = [(cv_aucs(runs, o), o) for o in cv_group(plan, run)]
    if any(a is None for a, _ in scores):
        return None
    return max(scores, key=lambda s: float(np.mean(s[0])))[1]


def store_dir(runs: Path, run: Run) -> Path:
    return runs / (run.store or f"store-{run.method}-{run.img_size}")


def run_config(plan: Plan, run: Run, runs: Path) -> RunConfig:
    """The `fptplus train` configuration of a run: the plan's backbone, weights and data, the row's fields."""
    from ..config import DataConfig, TrainConfig, build_dataclass
    from ..methods import get_method

    method = get_method(run.method)
    model = {"backbone": plan.backbone, "backbone_kwargs": dict(plan.backbone_kwargs), "weights": str(plan.weights),
             "img_size": run.img_size, **run.model}  # fmt: skip
    model_cfg = build_dataclass(method.config_cls, model, f"{run.folder} model", method.make_config)
    data = {"data": str(plan.data), **run.data}
    if run.features:  # a probe on another row's store
        data["store"] = str(store_dir(runs, features_source(plan, run)))
    elif method.uses_store(model_cfg):  # one store per method and resolution, shared by the runs
        data["store"] = str(store_dir(runs, run))
    train = {"epochs": run.epochs, "batch_size": plan.batch_size, "num_workers": plan.workers, "lr": run.lr,
             **run.train}  # fmt: skip
    return RunConfig(
        run.method,
        model_cfg,
        build_dataclass(DataConfig, data, f"{run.folder} data"),
        build_dataclass(TrainConfig, train, f"{run.folder} train"),
    )


def execute(plan: Plan, runs: Path, only: list[str] | None = None, budget_s: float | None = None,
            log: Callable[[str], None] | None = None) -> list[str]:  # fmt: skip
    """Runs what is missing, in the plan's order (`features:` rows after the row whose store they read).

    A run that fails is reported and skipped (the others still run); returns the failed runs' messages.
    """
    from ..errors import FPTPlusError
    from ..workflow import train

    log = info_of(_log, log)
    failed: list[str] = []
    start = time.monotonic()
    todo = [r for r in plan.runs if not only or r.name in only or r.folder in only]
    spent = lambda: budget_s is not None and time.monotonic() - start > budget_s  # noqa: E731
    # cross-validation first: every learning rate of a `cv_folds` row and resolution that has a run to do
    for run in [o for o in plan.runs if o.cv_folds and any(o.group == r.group and r.cv_folds for r in todo)]:
        if cv_aucs(runs, run) is not None or spent():
            continue
        try:
            out = cv_dir(runs, run)
            resume = (out / "config.yaml").exists()
            log(f"{'resuming' if resume else 'running'} the {run.cv_folds}-fold cross-validation of {run.folder}")
            cfg = RunConfig.load(out / "config.yaml") if resume else run_config(plan, run, runs)
            cfg.data.folds = run.cv_folds
            train(cfg, out, [run.seeds[0]], resume=resume)
        except FPTPlusError as err:
            failed.append(f"{run.folder} (cross-validation): {err}")
            log(f"FAILED {failed[-1]}")
    for run in sorted(todo, key=lambda r: r.features is not None):
        out = runs / run.folder
        if finished(out, run):
            log(f"{run.folder}: finished earlier, skipping")
            continue
        if run.cv_folds:
            winner = cv_winner(plan, runs, run)
            if winner is None:
                log(f"{run.folder}: not trained, the cross-validation of its row at {run.img_size} px is unfinished")
                continue
            if winner is not run:
                log(
                    f"{run.folder}: {run.cv_folds}-fold CV AUC {100 * np.mean(cv_aucs(runs, run)):.2f} < "
                    f"{winner.folder}'s {100 * np.mean(cv_aucs(runs, winner)):.2f}; not trained on the standard split"
                )
                continue
        if spent():
            log(f"{run.folder}: not started, the {budget_s:.0f} s budget is spent")
            continue
        try:
            if run.features and not (store_dir(runs, features_source(plan, run)) / "manifest.json").exists():
                raise ConfigError(f"{run.folder} reads the store of row {run.features!r} at {run.img_size} px: run "
                                  "that row first")  # fmt: skip
            resume = (out / "config.yaml").exists()
            log(f"{'resuming' if resume else 'training'} {run.folder}")
            cfg = RunConfig.load(out / "config.yaml") if resume else run_config(plan, run, runs)
            train(cfg, out, list(run.seeds), resume=resume)
        except FPTPlusError as err:
            failed.append(f"{run.folder}: {err}")
            log(f"FAILED {failed[-1]}")
    return failed


def features_source(plan: Plan, run: Run) -> Run:
    """The run whose store a `features:` row reads (same row name, same resolution)."""
    return next(o for o in plan.runs if o.name == run.features and o.img_size == run.img_size)


# -- records ------------------------------------------------------------------------------------------------------


def _predictions(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    labels = np.array([classes.index(r["label"]) for r in rows])
    return labels, np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]), classes


def record_of(plan: Plan, run: Run, run_dir: Path) -> dict[str, Any]:
    """What a finished run folder measured, per seed, with its resolved config."""
    from ..methods import get_method

    cfg = RunConfig.load(run_dir / "config.yaml")
    per_seed = [read_json(d / "results.json", ConfigError) for d in seed_dirs(run_dir, run)]
    pairs = []
    if plan.pair:
        for d in seed_dirs(run_dir, run):
            labels, probs, classes = _predictions(d / "predictions_test.csv")
            pairs.append(pair_auc(labels, probs, classes.index(plan.pair[0]), classes.index(plan.pair[1])))
    epoch_s = [r["epoch_seconds"] for r in per_seed if r.get("epoch_seconds") is not None]
    probes = [r["probe"] for r in per_seed if r.get("probe")]  # the value each seed's cross-validation chose
    chosen = [f"C {p['C']:g}" if "C" in p else f"k {p['k']}" for p in probes]
    return {
        "folder": run.folder, "name": run.name, "method": run.method, "img_size": run.img_size,
        "lr": cfg.train.lr if cfg.train.lr is not None else get_method(run.method).default_lr,
        "epochs": run.epochs, "seeds": list(run.seeds), "features": run.features,
        "val_auc": [r["val"]["auc"] for r in per_seed], "auc": [r["test"]["auc"] for r in per_seed],
        "auc_ci": [r["test"].get("auc_ci") for r in per_seed], "pair_auc": pairs,
        "params_percent": per_seed[0]["params"]["percent"],
        "epoch_seconds": float(np.mean(epoch_s)) if epoch_s else None,
        "device": per_seed[0].get("device", "cpu"),
        "measured_peak_mb": max(r.get("process_peak_rss_mb", r.get("peak_memory_mb", 0.0)) or 0.0 for r in per_seed),
        "model": cfg.to_dict()["model"], "batch_size": cfg.train.batch_size,
        "recorded": time.strftime("%Y-%m-%d"), **({"chosen": chosen} if chosen else {}),
    }  # fmt: skip


def cv_record(plan: Plan, run: Run, runs: Path, cv: dict[str, Any]) -> dict[str, Any]:
    """The record of a learning rate known only by its cross-validation (no test AUC: it was not chosen)."""
    from ..methods import get_method

    fold = RunConfig.load(cv_dir(runs, run) / "config.yaml")
    results = read_json(cv_dir(runs, run) / "fold-0" / "results.json", ConfigError)
    return {
        "folder": run.folder, "name": run.name, "method": run.method, "img_size": run.img_size,
        "lr": fold.train.lr if fold.train.lr is not None else get_method(run.method).default_lr,
        "epochs": run.epochs, "seeds": [], "features": None, "val_auc": [], "auc": [], "auc_ci": [],
        "pair_auc": [], "params_percent": results["params"]["percent"], "epoch_seconds": results.get("epoch_seconds"),
        "device": results.get("device", "cpu"), "measured_peak_mb": 0.0, "model": fold.to_dict()["model"],
        "batch_size": fold.train.batch_size, "recorded": time.strftime("%Y-%m-%d"), **cv,
    }  # fmt: skip


def collect(plan: Plan, runs: Path, results: Path) -> list[dict[str, Any]]:
    """One record per run of the plan: fresh from its finished folder, else the committed one (else none)."""
    committed = {}
    if (results / RECORDS).exists():
        committed = {r["folder"]: r for r in read_json(results / RECORDS, ConfigError)}
    records = []
    for run in plan.runs:
        cv = {"cv_folds": run.cv_folds, "cv_auc": cv_aucs(runs, run)} if cv_aucs(runs, run) else {}
        if finished(runs / run.folder, run):
            records.append({**record_of(plan, run, runs / run.folder), **cv})
        elif cv:  # a learning rate cross-validation did not choose: no standard-split run
            records.append(cv_record(plan, run, runs, cv))
        elif run.folder in committed:
            records.append(committed[run.folder])
    results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results / RECORDS, records)
    return records
