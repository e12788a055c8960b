"""`fptplus train`: data → (feature store) → one run per seed → summary; resumable as a whole.

RUN/config.yaml      the resolved config (reload with --config, or --resume RUN)
RUN/run.json         seeds and where the data/store live
RUN/splits.csv       the exact split used (a CSV manifest: reusable with --data RUN/splits.csv)
RUN/classes.json     class names in label order
RUN/store/           the feature store (FPT/FPT+, unless --store points elsewhere)
RUN/[seed-S/]        per seed: log.txt, metrics.csv/jsonl, tensorboard/, checkpoints/{best,last}, results.json
RUN/summary.json     mean ± std over seeds (several seeds only)

With `--folds K` (see `folds`): RUN/fold-F/ is one such run per fold, RUN/summary.json the mean ± std over folds
and seeds, RUN/oof_predictions.csv the out-of-fold predictions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..errors import ConfigError, RunError
from ..files import write_json_atomic
from ..logs import get_logger, info_of, log_file
from ..methods import get_method
from ..threads import apply_threads
from ..weights import HUB, is_random
from .callbacks import Callback, Callbacks, TensorBoard
from .lifecycle import open_run_folder, record_start, started_as_resume
from .loop import fit
from .outputs import RunPaths
from .prepare import load_data, prepare_inputs, side_note, store_path
from .probe import fit_probe
from .runfolder import (
    CLASSES_JSON,
    RUN_JSON,
    RunLock,
    check_new_run_folder,
    check_paths_utf8,
    check_split_record,
    is_run,
    read_results,
    read_run_info,
    record_files,
    seed_dir,
    store_record,
)
from .summary import SUMMARY_KEYS, RunSummary, format_summary, summarise  # noqa: F401  (re-exported)

_log = get_logger("train")


def train(
    cfg: RunConfig,
    out: str | Path,
    seeds: list[int] | None = None,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    callbacks: list[Callback] | None = None,
) -> dict[str, Any]:
    """Runs the protocol for every seed (skipping finished ones when resuming) and summarises them.

    Args:
        cfg: the run's configuration.
        out: the run folder: new or empty, or (with `resume`) an existing run, or (with `overwrite`) a folder
            whose run files are replaced.
        seeds: run seeds (default: cfg.train.seed).
        resume: continue the run in `out`.
        log: where lines go (default: the `fptplus.train` logger; RUN/log.txt gets them too).
        overwrite: start over in a folder that already holds a run or other files.
        callbacks: receivers of the trainer's events (default: TensorBoard and RUN/summary.md; the plots are
            added by `fptplus.workflow.default_callbacks`, which the command line uses).
    """
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    root = Path(out)
    check_paths_utf8(output=root, data=cfg.data.data or None, store=cfg.data.store)
    if not cfg.data.data:
        raise ConfigError("no dataset given: pass --data FOLDER_OR_CSV")
    if resume and not is_run(root):
        raise RunError(f"{root} is not a run folder (no fptplus run marker); start a run with --out {root}")
    method = get_method(cfg.method)
    shapes = method.validate(cfg.model)  # shapes and weights source, before any data is read
    lines: list[str] = []  # what is said before the folder is ours goes into its log.txt afterwards
    say = info_of(_log, log)
    early = lambda line: (lines.append(line), say(line))  # noqa: E731
    if getattr(cfg.model, "side_img_size", 0) is None:  # record the size the default chose, and say it
        h, w = shapes.side.img_size
        cfg.model.side_img_size = h if h == w else (h, w)
    if hasattr(shapes, "side"):
        side_note(shapes, early)
    if cfg.train.lr is None and method.fitter is None:  # the config records the learning rate used
        cfg.train.lr = method.default_lr
    check_new_run_folder(root, cfg.data.data, overwrite or resume)  # refusals that write nothing
    index = load_data(cfg, early)  # the data checks, before any write
    state.wait_for_everyone()  # every process has checked the folder and the data before the main one writes
    absolutize(cfg)
    seeds = seeds or [cfg.train.seed]
    callbacks = Callbacks(callbacks if callbacks is not None else [TensorBoard(), RunSummary()])
    with RunLock(root, enabled=state.is_main_process):  # a live run in this folder is refused here
        if state.is_main_process:
            resume = open_run_folder(root, cfg, seeds, resume, overwrite, say)
            record_start(root, resume)
        state.wait_for_everyone()  # every process sees the folder as the main one left it
        resume = started_as_resume(root)
        if state.is_main_process:
            with open(root / "log.txt", "a", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
        try:
            with log_file(root / "log.txt", enabled=state.is_main_process):
                return _train(cfg, root, index, seeds, resume, say, callbacks, state)
        finally:
            if state.is_main_process:
                record_files(root)


def _train(cfg, root, index, seeds, resume, log, callbacks, state) -> dict[str, Any]:
    """`train` once the folder is ours and its log file is open."""
    if cfg.data.folds and cfg.data.fold is None:
        from .folds import train_folds

        return train_folds(cfg, root, index, seeds, resume, log, callbacks, state, train)
    if resume and (root / "splits.csv").exists():
        check_split_record(root, index, cfg.data.data)
    store_at = store_path(cfg, root)
    if state.is_main_process:  # the run's records come first: `--resume` works from any moment on
        cfg.save(root / "config.yaml")
        index.write_csv(root / "splits.csv")
        write_json_atomic(root / CLASSES_JSON, index.classes)
        write_json_atomic(root / RUN_JSON, {"seeds": seeds, "store": store_record(store_at, root)})
    state.wait_for_everyone()
    apply_threads(cfg.train.threads, cfg.train.num_workers, log)  # the preload / scan decodes in its workers
    store, usable = prepare_inputs(cfg, root, index, store_at, log)
    if store is not None and cfg.train.num_workers:  # training from the store: reading it costs its workers little
        apply_threads(cfg.train.threads, 0, log)
    results = {}
    for seed in seeds:
        run_cfg = copy.deepcopy(cfg)
        run_cfg.train.seed = seed
        run_root = seed_dir(root, seeds, seed)
        run_root.mkdir(parents=True, exist_ok=True)
        paths = RunPaths(run_root)
        if paths.results.exists():
            log(f"seed {seed}: finished earlier ({paths.results}); skipping")
            results[seed] = read_results(paths.results)
            continue
        if state.is_main_process:
            run_cfg.save(paths.config)
        runner = fit_probe if get_method(cfg.method).fitter is not None else fit  # probes: closed form, no epochs
        with log_file(paths.log if run_root != root else None, enabled=state.is_main_process):
            results[seed] = runner(run_cfg, run_root, index, store, usable, resume, log, callbacks).results
    summary = summarise(results)
    if state.is_main_process:
        if len(seeds) > 1:
            (root / "summary.json").write_text(json.dumps(summary, indent=1))
            log("summary over seeds " + ", ".join(map(str, seeds)) + ": " + format_summary(summary))
        callbacks.on_train_end(root, cfg, summary, seeds)
    return summary


def absolutize(cfg: RunConfig) -> None:
    """Paths in the saved config stay valid from any working directory."""
    if cfg.data.data:
        cfg.data.data = str(Path(cfg.data.data).resolve())
    if cfg.data.store:
        cfg.data.store = str(Path(cfg.data.store).resolve())
    weights = getattr(cfg.model, "weights", None)
    if weights is not None and not is_random(weights) and weights != HUB and not str(weights).startswith("builtin:"):
        cfg.model.weights = str(Path(weights).resolve())


def resume_config(run: str | Path) -> tuple[RunConfig, list[int]]:
    """Config and seeds of an existing run folder."""
    root = Path(run)
    if not is_run(root):
        raise RunError(f"{root} is not a run folder (no config.yaml)")
    cfg = RunConfig.load(root / "config.yaml")
    seeds = read_run_info(root)["seeds"] if (root / RUN_JSON).exists() else [cfg.train.seed]
    return cfg, seeds
