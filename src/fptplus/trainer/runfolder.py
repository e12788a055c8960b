"""The run folder as a whole: where a new run may be written, and reading back the records it keeps.

A run folder is what `fptplus train --out RUN` makes (see `train.run`). A new run goes into an empty or new
folder only — never into the dataset, never over a folder of the user's files unless `--overwrite` says so,
and `--overwrite` of a run removes only the files a run consists of (its feature store is kept: a store is
reused only when its fingerprint, samples and images match). Every record read back (run.json, classes.json)
is checked, so a damaged one is a one-line error naming it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..data.checks import RENAME_HINT, not_utf8
from ..data.index import DataIndex
from ..errors import RunError
from ..files import check_schema, display, read_json, read_json_schema

RUN_JSON = "run.json"
CLASSES_JSON = "classes.json"
CONFIG = "config.yaml"
RUN_INFO_SCHEMA = {"seeds": list}
DAMAGED = "the run folder is damaged: restore the file from a backup, or train a new run with --out"
# What a run writes at its top level and in each seed folder (`--overwrite` removes exactly these).
RUN_FILES = ("config.yaml", "run.json", "splits.csv", "classes.json", "summary.json", "summary.md", "log.txt",
             "metrics.csv", "metrics.jsonl", "results.json", "skipped.csv", "curves.png", "predictions_*.csv",
             "eval-*.json", "roc_*.png", "confusion_*.png", "calibration.json", "reliability_*.png",
             "oof_predictions.csv")  # fmt: skip
RUN_DIRS = ("checkpoints", "tensorboard", "explain", "seed-*", "fold-*")


def is_run(root: Path) -> bool:
    return (root / CONFIG).is_file()


def _entries(root: Path) -> list[Path]:
    return sorted(root.iterdir()) if root.is_dir() else []


def check_paths_utf8(**paths: str | Path | None) -> None:
    """Refuses output/data paths that cannot be written into the run's YAML/JSON/CSV records."""
    for what, path in paths.items():
        if path is not None and not_utf8(str(path)):
            raise RunError(f"the {what} path {display(path)} is not valid UTF-8; {RENAME_HINT}")


def check_new_run_folder(root: Path, data: str | Path, overwrite: bool, remove: bool = True) -> None:
    """Refuses an --out that would mix the run with other files or with the dataset (before any work).

    Args:
        root: the --out folder.
        data: the dataset (folder or CSV manifest).
        overwrite: the user asked to replace what is there (only a run's own files are removed).
        remove: with `overwrite`, remove an old run's files (the main process only, under DDP).
    """
    out, data = root.resolve(), Path(data).resolve()
    data_dir = data if data.is_dir() else data.parent
    if out == data_dir or (data.is_dir() and data_dir in out.parents):
        where = "is the dataset folder" if out == data_dir else f"is inside the dataset folder {display(data_dir)}"
        scanned = " (and be scanned as classes)" if data.is_dir() else ""
        raise RunError(
            f"--out {display(root)} {where}: the run's files would mix with the images{scanned}. "
            "Choose a folder outside it"
        )
    if root.exists() and not root.is_dir():
        raise RunError(f"--out {display(root)} exists and is not a folder")
    entries = _entries(root)
    if not entries:
        return
    if is_run(root):
        if not overwrite:
            raise RunError(f"{display(root)} already holds a run; continue it with --resume {display(root)}, start "
                           "it over with --overwrite, or choose another --out")  # fmt: skip
        if remove:
            remove_run_files(root)
        return
    if not overwrite:
        shown = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunError(
            f"--out {display(root)} is not empty ({shown}) and is not a run folder; choose a new or empty folder, "
            "or pass --overwrite to write the run into it (files with a run's names are replaced)"
        )


def remove_run_files(root: Path) -> None:
    """Deletes what a run wrote (top level and seed folders); the store and any other file stay."""
    for folder in [root, *sorted(root.glob("seed-*"))]:
        for pattern in RUN_FILES:
            for p in folder.glob(pattern):
                if p.is_file():
                    p.unlink()
        for pattern in RUN_DIRS:
            for p in folder.glob(pattern):
                if p.is_dir() and not p.is_symlink() and p.name != "store":
                    shutil.rmtree(p)


def read_run_info(root: Path) -> dict[str, Any]:
    """run.json: {"seeds": [int, ...], "store": path or null}, checked."""
    info = read_json_schema(root / RUN_JSON, RUN_INFO_SCHEMA, RunError, DAMAGED)
    seeds = info["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise RunError(f"{display(root / RUN_JSON)} is damaged: 'seeds' should be a list of integers; {DAMAGED}")
    if not isinstance(info.get("store"), (str, type(None))):
        raise RunError(f"{display(root / RUN_JSON)} is damaged: 'store' should be a path or null; {DAMAGED}")
    return info


def read_classes(root: Path) -> list[str]:
    """classes.json: the class names in label order, checked."""
    classes = read_json(root / CLASSES_JSON, RunError, DAMAGED)
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise RunError(f"{display(root / CLASSES_JSON)} is damaged: expected a list of class names; {DAMAGED}")
    return classes


def read_results(path: Path) -> dict[str, Any]:
    """A finished seed's results.json, checked enough to summarise it."""
    obj = read_json(path, RunError, f"delete it to redo that seed with --resume, or {DAMAGED}")
    return check_schema(obj, {"test": dict, "params": dict, "method": str}, path, RunError,
                        f"delete it to redo that seed with --resume, or {DAMAGED}")  # fmt: skip


def store_record(store: Path | None, root: Path) -> str | None:
    """The store's path as run.json keeps it: relative to the run folder when inside it (the run can move),
    absolute otherwise (a shared --store stays found from any working directory)."""
    if store is None:
        return None
    store, root = Path(store).resolve(), root.resolve()
    return os.path.relpath(store, root) if root in store.parents else str(store)


def store_location(info: dict[str, Any], root: Path) -> Path | None:
    """Where run.json says the run's store is (relative entries are relative to the run folder)."""
    if not info.get("store"):
        return None
    path = Path(info["store"])
    return path if path.is_absolute() else root / path


def check_split_record(root: Path, index: DataIndex, data: str | Path) -> None:
    """Refuses a dataset that no longer matches the split the run recorded (RUN/splits.csv)."""
    from ..data.index import label_bits
    from ..data.sources import read_csv_rows

    _, rows = read_csv_rows(root / "splits.csv", index.classes if index.multilabel else ())
    if index.multilabel:
        now = [(index.reader.locate(s.path), [str(b) for b in label_bits([s.label], len(index.classes))[0]], s.split)
               for s in index.samples]  # fmt: skip
        then = [(r.get("path"), [r.get(c.lower()) for c in index.classes], r.get("split")) for r in rows]
    else:
        now = [(index.reader.locate(s.path), index.classes[s.label], s.split) for s in index.samples]
        then = [(r.get("path"), r.get("label"), r.get("split")) for r in rows]
    if now != then:
        raise RunError(
            f"the dataset {display(data)} no longer matches {display(root / 'splits.csv')} (images added, removed or "
            "relabelled since training); evaluate on a new split by training a new run"
        )
