"""`fptplus tune`: a hyper-parameter search over one feature store (Optuna: TPE sampler, median pruning on the
validation AUC of every epoch).

Only fields that leave the store unchanged are searched (learning rate, weight decay, and for FPT/FPT+ the fusion
dropout and the number of prompts), so every trial trains from the same store, built once. The study lives in
OUT/study.db (SQLite): rerunning the same command continues it; a trial whose process was killed (its worker lock in
OUT/workers/ no longer held) or interrupted (Ctrl+C) is marked failed and its point run again once; finished and
pruned trials are never repeated, and a continued study samples new points (the sampler's seed moves on with the
number of trials); several processes may share one OUT folder (parallel trials). Outputs:

    OUT/trials/trial-N/      each trial's run folder (its config.yaml, log, metrics, checkpoints)
    OUT/trials.csv           number, state, validation AUC, parameters, seconds
    OUT/best/config.yaml     the best trial's configuration (`fptplus train --config OUT/best/config.yaml`)
    OUT/history.png          validation AUC per trial and the best so far

Needs the optional package optuna (`pip install 'fptplus[tune]'`).
"""

from __future__ import annotations

import copy
import csv
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import ConfigError
from .logs import get_logger, info_of
from .trainer.callbacks import Callback, RunInfo

_log = get_logger("tune")

STUDY_FILE = "study.db"


@dataclass(frozen=True)
class Param:
    """One searched field: `section` is "model" or "train"; kind "log" / "float" (low, high) or "choice"."""

    section: str
    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.kind == "log":
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high)
        return trial.suggest_categorical(self.name, list(self.choices))


RATIOS = (0.1, 0.2, 0.4)  # token ratios searched (the paper: most datasets prefer < 0.5)


def search_space(cfg: RunConfig) -> list[Param]:
    """The fields searched for this method: those one feature store serves — learning rate, weight decay, fusion
    dropout, prompts, and for FPT+ the token ratio (a store kept at the largest serves the others from its first
    rows) and how many of the top layers are fused (a store of the most serves fewer)."""
    space = [Param("train", "lr", "log", 1e-4, 1e-2), Param("train", "weight_decay", "log", 1e-3, 0.3)]
    model_fields = {f.name for f in fields(cfg.model)}
    if "fusion_dropout" in model_fields:
        space.append(Param("model", "fusion_dropout", "float", 0.0, 0.6))
    if "num_prompts" in model_fields:
        space.append(Param("model", "num_prompts", "choice", choices=(8, 16, 32)))
    fpt_plus = "token_ratio" in model_fields and isinstance(getattr(cfg.model, "side_depth", None), int)
    if fpt_plus and cfg.model.importance != "all" and cfg.model.fused_layers in (None, cfg.model.side_depth):
        depth = cfg.model.side_depth
        space.append(Param("model", "token_ratio", "choice", choices=RATIOS))
        layers = tuple(sorted({max(1, depth // 3), max(1, 2 * depth // 3), depth}))
        space.append(Param("model", "fused_layers", "choice", choices=layers))
    return space


def prebuild_store(base: RunConfig, space: list[Param], log) -> None:
    """One store for every trial: kept at the largest searched token ratio and fused layers (each trial then reads
    its own ratio and layers from it: no trial preloads)."""
    import dataclasses

    from .methods import get_method
    from .store import PreloadOptions, preload
    from .trainer.prepare import load_data

    widest = {p.name: max(p.choices) for p in space if p.name in ("token_ratio", "fused_layers")}
    if not widest or not get_method(base.method).uses_store(base.model):
        return
    model = dataclasses.replace(base.model, **widest)
    log(f"one feature store for every trial: token ratio {widest.get('token_ratio')}, top "
        f"{widest.get('fused_layers')} layers ({base.data.store})")  # fmt: skip
    index = load_data(copy.deepcopy(base), log)
    options = PreloadOptions(dtype=base.data.store_dtype, batch_size=base.train.batch_size,
                             num_workers=base.train.num_workers, skip_bad=base.data.skip_bad,
                             resize=base.data.geometry, engine=base.train.engine,
                             threads=base.train.threads)  # fmt: skip
    preload(index, model, Path(base.data.store), options, log=log)


def trial_config(base: RunConfig, space: list[Param], values: dict[str, Any]) -> RunConfig:
    cfg = copy.deepcopy(base)
    for p in space:
        setattr(getattr(cfg, p.section), p.name, values[p.name])
    return cfg


class _Pruning(Callback):
    """Reports each epoch's validation AUC to the trial; raises optuna's TrialPruned when the pruner says so."""

    def __init__(self, trial, optuna) -> None:
        self.trial, self.optuna = trial, optuna

    def on_epoch_end(self, run: RunInfo, row: dict[str, Any]) -> None:
        auc = row.get("val_auc")
        if auc is None:
            return
        self.trial.report(float(auc), step=int(row["epoch"]))
        if self.trial.should_prune():
            raise self.optuna.TrialPruned(f"validation AUC {100 * auc:.2f} at epoch {row['epoch']}")


def _optuna():
    try:
        import optuna
    except ImportError as err:
        raise ConfigError(f"fptplus tune needs optuna ({err}); install it with `pip install 'fptplus[tune]'`") from err
    return optuna


@dataclass
class TuneResult:
    best_value: float
    best_params: dict[str, Any]
    best_config: Path
    finished: int
    pruned: int


def tune(
    cfg: RunConfig,
    out: str | Path,
    trials: int,
    timeout: float | None = None,
    seed: int = 0,
    heartbeat_s: int = 30,
    log: Callable[[str], None] | None = None,
) -> TuneResult:
    """Runs trials until `trials` have finished or been pruned (counting those of earlier runs of the same OUT), or
    `timeout` seconds have passed; then writes trials.csv, best/config.yaml and history.png.

    Args:
        cfg: the base configuration (dataset, method, every fixed field); its searched fields are overridden.
        out: the study folder (created, or continued when it holds a study of the same method and dataset).
        heartbeat_s: a running trial writes a heartbeat this often; one silent for 2× this is taken as killed.
    """
    optuna = _optuna()
    from .trainer.run import train

    log = info_of(_log, log)
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = copy.deepcopy(cfg)
    if not base.data.store:
        base.data.store = str((out / "store").resolve())  # one store for every trial
    space = search_space(base)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # an interrupted trial: our one line, not optuna's traceback
    with warnings.catch_warnings():  # heartbeats are marked experimental in optuna; they are what resumes a kill
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{(out / STUDY_FILE).resolve()}",
            heartbeat_interval=heartbeat_s,
            grace_period=2 * heartbeat_s,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
    study = optuna.create_study(
        study_name="fptplus",
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    )
    # a continued study must not draw the points an earlier process drew from the same seed
    study.sampler = optuna.samplers.TPESampler(seed=seed + 7919 * len(study.trials), n_startup_trials=5)
    identity = {"method": base.method, "data": str(base.data.data), "space": [p.name for p in space]}
    known = study.user_attrs.get("identity")
    if known is None:
        study.set_user_attr("identity", identity)
    elif known != identity:
        raise ConfigError(
            f"{out} holds a study of {known['method']} on {known['data']}; this one is {identity['method']} on "
            f"{identity['data']}: use another --out"
        )
    states = optuna.trial.TrialState
    prebuild_store(base, space, log)
    worker = _WorkerLock(out)
    worker.acquire()
    _retry_lost_trials(study, storage, out, states, log)

    def done() -> int:
        return sum(t.state in (states.COMPLETE, states.PRUNED) for t in study.get_trials(deepcopy=False))

    def objective(trial) -> float:
        trial.set_user_attr("worker", worker.name)
        values = {p.name: p.suggest(trial) for p in space}
        run_cfg = trial_config(base, space, values)
        folder = out / "trials" / f"trial-{trial.number}"
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        log(f"trial {trial.number}: {shown}")
        # with --folds K a trial is a K-fold cross-validation scored by its mean validation AUC (no pruning: the
        # folds' epochs are not one sequence)
        pruning = [] if base.data.folds and base.data.fold is None else [_Pruning(trial, optuna)]
        try:
            train(run_cfg, folder, overwrite=True, callbacks=pruning)  # its lines: trial-N/log.txt
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # run again when the study is continued
            raise
        auc = _val_auc(folder)
        log(f"trial {trial.number}: validation AUC {100 * auc:.2f}")
        return auc

    def stop_when_done(study, trial) -> None:
        if done() >= trials:
            study.stop()

    remaining = trials - done()
    try:
        if remaining > 0:
            log(f"study {out / STUDY_FILE}: {done()} trials done, running up to {remaining} more")
            study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[stop_when_done],
                           catch=(), gc_after_trial=True)  # fmt: skip
    finally:
        worker.release()
    return _write_outputs(study, base, space, out, optuna, log)


class _WorkerLock:
    """OUT/workers/HOST-PID.lock, held (flock) while this process runs trials: a RUNNING trial whose worker's lock
    is free belongs to a process that died."""

    def __init__(self, out: Path) -> None:
        import os
        import socket

        self.folder = out / "workers"
        self.name = f"{socket.gethostname()}-{os.getpid()}.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        import os

        from .store.lock import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.folder / self.name, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        import os

        if self.fd is not None:
            os.close(self.fd)
            (self.folder / self.name).unlink(missing_ok=True)
            self.fd = None


def _worker_alive(folder: Path, name: str | None) -> bool:
    """Whether the process that holds workers/NAME is still running (its flock is held)."""
    import os

    from .store.lock import fcntl

    if not name or fcntl is None or not (folder / name).exists():
        return False
    fd = os.open(folder / name, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True  # held: alive
    finally:
        os.close(fd)
    (folder / name).unlink(missing_ok=True)  # a dead worker's lock file
    return False


def _retry_lost_trials(study, storage, out: Path, states, log) -> None:
    """Trials left RUNNING by a process that is gone are marked failed; every failed trial that was killed or
    interrupted (not one that failed by itself) has its point queued again, once."""
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    retried |= {t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False):
        lost = t.state == states.RUNNING and not _worker_alive(out / "workers", t.user_attrs.get("worker"))
        if lost:
            storage.set_trial_state_values(t._trial_id, state=states.FAIL)
        if (lost or (t.state == states.FAIL and t.user_attrs.get("interrupted"))) and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            log(f"trial {t.number} was {'killed' if lost else 'interrupted'}; its point is run again")


def _val_auc(folder: Path) -> float:
    """A trial's validation AUC (a cross-validation's: the mean over folds and seeds)."""
    from .files import read_json

    if (folder / "fold-0").is_dir():
        val = read_json(folder / "summary.json", ConfigError)["val"].get("auc")
        if val is None:
            raise ConfigError(f"{folder}: validation AUC undefined in some fold; tune needs both classes in each")
        return float(val["mean"])
    res = read_json(folder / "results.json", ConfigError)
    auc = res["val"].get("auc")
    if auc is None:
        raise ConfigError(f"{folder}: validation AUC undefined ({res['val'].get('auc_note')}); tune needs both classes")
    return float(auc)


def _write_outputs(study, base: RunConfig, space: list[Param], out: Path, optuna, log) -> TuneResult:
    states = optuna.trial.TrialState
    all_trials = study.get_trials(deepcopy=False)
    with open(out / "trials.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "val_auc", *(p.name for p in space), "seconds"])
        for t in all_trials:
            secs = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
            w.writerow([t.number, t.state.name, "" if t.value is None else f"{t.value:.6f}",
                        *(t.params.get(p.name, "") for p in space), secs])  # fmt: skip
    complete = [t for t in all_trials if t.state == states.COMPLETE]
    if not complete:
        raise ConfigError(f"no trial of {out} finished (all pruned or failed); see {out / 'trials.csv'}")
    best = study.best_trial
    best_cfg = trial_config(base, space, best.params)
    (out / "best").mkdir(exist_ok=True)
    best_cfg.save(out / "best" / "config.yaml")
    _plot_history(all_trials, states, out / "history.png")
    pruned = sum(t.state == states.PRUNED for t in all_trials)
    log(
        f"best: trial {best.number}, validation AUC {100 * best.value:.2f} ({best.params}); {len(complete)} "
        f"finished, {pruned} pruned. Train it: fptplus train --config {out / 'best' / 'config.yaml'} --out RUN"
    )
    return TuneResult(best.value, dict(best.params), out / "best" / "config.yaml", len(complete), pruned)


def _plot_history(trials, states, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.state == states.COMPLETE]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    xs = [t.number for t in done]
    ys = [100 * t.value for t in done]
    ax.scatter(xs, ys, color="C0", label="finished trial")
    best, running = [], -math.inf
    for y in ys:
        running = max(running, y)
        best.append(running)
    ax.step(xs, best, where="post", color="C1", label="best so far")
    pruned = [t for t in trials if t.state == states.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter([t.number for t in pruned], [100 * max(t.intermediate_values.values()) for t in pruned],
                   marker="x", color="0.5", label="pruned (best epoch reached)")  # fmt: skip
    ax.set_xlabel("trial")
    ax.set_ylabel("validation AUC (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
