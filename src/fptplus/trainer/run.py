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

import numpy as np
import torch

from ..config import RunConfig
from ..data.copies import cross_split_copies
from ..data.scan import check_bad, resize_note, scan_images
from ..data.sources import DataIndex
from ..errors import ConfigError, RunError
from ..files import write_json_atomic
from ..logs import get_logger, info_of, log_file
from ..methods import get_method
from ..store import FeatureStore, PreloadOptions, preload
from ..store.format import MANIFEST, record_user
from ..threads import apply_threads
from ..weights import HUB, is_random
from .callbacks import Callback, Callbacks, TensorBoard
from .loop import fit
from .outputs import RunPaths
from .probe import fit_probe
from .runfolder import (
    CLASSES_JSON,
    MARKER,
    RUN_JSON,
    RunLock,
    check_new_run_folder,
    check_paths_utf8,
    check_split_record,
    claim,
    is_run,
    is_run_path,
    read_marker,
    read_results,
    read_run_info,
    record_files,
    remove_run_files,
    store_record,
)
from .summary import RunSummary

_log = get_logger("train")
SUMMARY_KEYS = ("auc", "accuracy", "balanced_accuracy", "macro_f1", "kappa")


def seed_dir(root: Path, seeds: list[int], seed: int) -> Path:
    return root if len(seeds) == 1 else root / f"seed-{seed}"


def load_data(cfg: RunConfig, log: Callable[[str], None]) -> DataIndex:
    """The run's dataset, checked (see `data.checks`), its warnings logged; sets the model's class count."""
    if not cfg.data.data:
        raise ConfigError("no dataset given: pass --data FOLDER_OR_CSV")
    index = cfg.data.load_index()
    if index.multilabel and cfg.data.ordinal:
        raise ConfigError("--ordinal (graded classes) and --label-columns (multi-label) exclude each other")
    log(index.describe())
    for warning in index.warnings:
        log(f"warning: {warning}")
    crossing = cross_split_copies(cfg.data.data, index)
    if crossing:
        (first, a), (second, b) = crossing["crossing"][0][:2]
        log(f"warning: the audit of this dataset ({crossing['report']}) found {len(crossing['crossing'])} group(s) of "
            f"copies that this split puts in two splits, e.g. {first} ({a}) and {second} ({b}): the test AUC counts "
            "images the model was trained on. Train on the audit's grouped.csv (next to its report) — its "
            "automatic split keeps each group in one split")  # fmt: skip
    if cfg.model.num_classes != len(index.classes):
        cfg.model.num_classes = len(index.classes)
    return index


def store_path(cfg: RunConfig, root: Path) -> Path | None:
    """Where this run's feature store lives (None when it trains online)."""
    if not (get_method(cfg.method).uses_store(cfg.model) and cfg.train.preload):
        return None
    return Path(cfg.data.store) if cfg.data.store else root / "store"


def prepare_inputs(
    cfg: RunConfig, root: Path, index: DataIndex, store_at: Path | None, log: Callable[[str], None]
) -> tuple[FeatureStore | None, list[int]]:
    """Builds or checks the feature store (FPT/FPT+, the probes), or decodes every image once (online).

    A probe reads any complete store that holds its features (e.g. an FPT+ run's); without one it builds FPT+'s
    default store for its backbone and resolution.
    """
    if store_at is not None:
        inputs = get_method(cfg.method).inputs
        if not (getattr(inputs, "reads_any_store", False) and (store_at / MANIFEST).exists()):
            options = PreloadOptions(
                dtype=cfg.data.store_dtype,
                batch_size=cfg.train.batch_size,
                num_workers=cfg.train.num_workers,
                skip_bad=cfg.data.skip_bad,
                resize=cfg.data.resize,
                store_ratio=cfg.data.store_ratio if not getattr(inputs, "reads_any_store", False) else None,
            )  # a store shared by several runs (--store) is written by one of them; the others wait, then reuse it
            preload(index, inputs.store_config(cfg.model), store_at, options, log=log)
        store = FeatureStore(store_at)
        inputs.check_store(store, cfg.model, index, cfg.data.resize)
        if store_at.resolve() not in root.resolve().parents:  # a shared store: it knows who reads it
            record_user(store_at, root)
        note = resize_note([tuple(s["hw"]) for s in store.samples if s.get("hw")], cfg.data.resize)
        if note:
            log(f"note: {note}")
        return store, store.usable()
    log("checking that every image decodes (online training)")
    sizes: list[tuple[int, int]] = []
    usable = check_bad(index, scan_images(index, cfg.train.num_workers, sizes), cfg.data.skip_bad, root)
    note = resize_note(sizes, cfg.data.resize)
    if note:
        log(f"note: {note}")
    return None, usable


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


MIN_SIDE_PATCHES = 4  # fewer patches per side and the side network sees a handful of tokens


def side_note(model, log) -> None:
    """Says what the side network reads (the default is easy to miss: 224 px → 56 px, 4 × 4 patches)."""
    (h, w), (ph, pw) = model.side.img_size, tuple(model.side.vit.patch_embed.patch_size)
    log(f"side network input: {h}x{w} px = {h // ph}x{w // pw} patches of {ph} px (--side-img-size; default: the "
        "patch multiple nearest a quarter of --img-size)")  # fmt: skip
    if min(h // ph, w // pw) < MIN_SIDE_PATCHES:
        log(f"warning: {h // ph}x{w // pw} patches are too few for the side network to see anything; pass "
            f"--side-img-size {MIN_SIDE_PATCHES * ph} or more")  # fmt: skip


def open_run_folder(root: Path, cfg: RunConfig, seeds: list[int], resume: bool, overwrite: bool, log) -> bool:
    """Decides, under the run lock, whether `root` continues a run (True) or starts one (False), and makes it so.

    A run that stopped before any seed trained is started over (its files removed: nothing of value is lost); an
    interrupted run asked for again with the identical configuration and seeds is continued (so "rerun the same
    command" continues it); `--overwrite` removes the old run's files; anything else is refused with the command
    that does what the user most likely wants.
    """
    if not is_run(root):
        entries = sorted(root.iterdir()) if root.is_dir() else []
        clash = [e.name for e in entries if e.is_file() and e.name != "log.txt" and is_run_path(e.name)]
        if clash:
            raise RunError(
                f"--out {root} holds files with the names a run writes ({', '.join(clash[:4])}): the run would read "
                "them as its own or replace them. Move them, or choose another --out"
            )
        claim(root)
        return False
    if resume:
        return True
    trained = any((root / rel).exists() for rel in _trained_marks(root))
    finished = _finished(root)
    if overwrite or not trained:
        if not overwrite:
            log(f"{root}: the previous attempt stopped before any seed trained; starting over (its feature store, if "
                "any, is kept)")  # fmt: skip
        remove_run_files(root)
        if read_marker(root) is None:
            claim(root)
        return False
    same = _same_config(root, cfg, seeds)
    if not finished and same is None:
        log(f"{root}: continuing the interrupted run (same configuration and seeds)")
        return True
    state = "a finished run" if finished else f"an unfinished run of another configuration ({same})"
    raise RunError(
        f"{root} already holds {state}. "
        + (f"Continue it with `fptplus train --resume {root}`, or start " if not finished else "Start ")
        + "over with --overwrite (only the files that run wrote are removed; the feature store stays), or choose "
        "another --out"
    )


def _trained_marks(root: Path) -> list[str]:
    """Files that exist once a seed has trained (its last checkpoint or its results), at any depth of a run."""
    marks = []
    for folder in [root, *root.glob("seed-*"), *root.glob("fold-*"), *root.glob("fold-*/seed-*")]:
        rel = folder.relative_to(root)
        marks += [str(rel / "checkpoints" / "last"), str(rel / "results.json")]
    return marks


def _finished(root: Path) -> bool:
    try:
        info = read_run_info(root)
    except RunError:
        return False
    if info.get("folds"):
        return (root / "summary.json").exists()
    seeds = info["seeds"]
    return all((seed_dir(root, seeds, s) / "results.json").exists() for s in seeds)


def _same_config(root: Path, cfg: RunConfig, seeds: list[int]) -> str | None:
    """None when the run in `root` was started with this configuration and these seeds, else what differs."""
    try:
        saved = RunConfig.load(root / "config.yaml").to_dict()
        saved_seeds = read_run_info(root)["seeds"]
    except (RunError, ConfigError):
        return "its config.yaml or run.json cannot be read"
    now = cfg.to_dict()
    diffs = [f"{section}.{k}: {saved[section].get(k)!r} -> {v!r}" for section in ("model", "data", "train")
             for k, v in now[section].items() if saved[section].get(k) != v]  # fmt: skip
    if saved["method"] != now["method"]:
        diffs.insert(0, f"method: {saved['method']} -> {now['method']}")
    if saved_seeds != seeds:
        diffs.append(f"seeds: {saved_seeds} -> {seeds}")
    return "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "") if diffs else None


def record_start(root: Path, resume: bool) -> None:
    """Tells the other processes (DDP) what the main one decided: the marker's `start`."""
    marker = read_marker(root) or {}
    write_json_atomic(root / MARKER, {**marker, "start": "resume" if resume else "new"})


def started_as_resume(root: Path) -> bool:
    marker = read_marker(root)
    return bool(marker and marker.get("start") == "resume")


def _train(cfg, root, index, seeds, resume, log, callbacks, state) -> dict[str, Any]:
    """`train` once the folder is ours and its log file is open."""
    if cfg.data.folds and cfg.data.fold is None:
        from .folds import train_folds

        return train_folds(cfg, root, index, seeds, resume, log, callbacks, state)
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


def summarise(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std (sample std, as the paper's 5 repeats) of the test metrics over seeds."""
    out: dict[str, Any] = {"seeds": sorted(results), "test": {}}
    for key in SUMMARY_KEYS:
        values = [r["test"][key] for r in results.values() if r["test"].get(key) is not None]
        if values:
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out["test"][key] = {"mean": float(np.mean(values)), "std": std, "values": values}
    first = next(iter(results.values()))
    out["params"] = first["params"]
    out["method"] = first["method"]
    rss = [r.get("process_peak_rss_mb") for r in results.values() if r.get("process_peak_rss_mb") is not None]
    out["memory"] = {"train_step_mb": first.get("train_step_mb"), "process_peak_rss_mb": max(rss) if rss else None}
    return out


def format_summary(summary: dict[str, Any]) -> str:
    parts = []
    for key, v in summary["test"].items():
        scale = 100 if key != "kappa" else 1
        parts.append(f"{key} {scale * v['mean']:.2f} ± {scale * v['std']:.2f}")
    return "; ".join(parts)


def resume_config(run: str | Path) -> tuple[RunConfig, list[int]]:
    """Config and seeds of an existing run folder."""
    root = Path(run)
    if not is_run(root):
        raise RunError(f"{root} is not a run folder (no config.yaml)")
    cfg = RunConfig.load(root / "config.yaml")
    seeds = read_run_info(root)["seeds"] if (root / RUN_JSON).exists() else [cfg.train.seed]
    return cfg, seeds
