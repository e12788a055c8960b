"""The run folder as a whole: where a new run may be written, and reading back the records it keeps.

A run folder is what `fptplus train --out RUN` makes (see `train.run`), recognised by its marker
(RUN/.fptplus-run.json: the format, what was in the folder before the run, and every file the run wrote). A new run
goes into an empty or new folder only — never into the dataset, never next to the user's files unless `--overwrite`
says so — and `--overwrite` removes exactly the files the marker lists (the feature store and the user's files stay).
While a process trains the run it holds RUN/.fptplus-run.lock, so a second `train` into it is refused by name. Every
record read back (run.json, classes.json) is checked, so a damaged one is a one-line error naming it.
"""

from __future__ import annotations

import errno
import os
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ..data.checks import RENAME_HINT, not_utf8
from ..data.index import DataIndex
from ..errors import RunError
from ..files import check_schema, display, read_json, read_json_schema, write_json_atomic

RUN_JSON = "run.json"
CLASSES_JSON = "classes.json"
CONFIG = "config.yaml"
MARKER = ".fptplus-run.json"  # what makes a folder a run: fptplus alone writes it
LOCK = ".fptplus-run.lock"  # held (flock) by the process training the run
MARKER_FORMAT = 1
MARKER_SCHEMA = {"format": int, "tool": str, "preexisting": list, "files": list}
RUN_INFO_SCHEMA = {"seeds": list}
DAMAGED = "the run folder is damaged: restore the file from a backup, or train a new run with --out"
# What a run writes at its top level and in each seed folder (what `record_files` lists).
RUN_FILES = ("config.yaml", "run.json", "splits.csv", "classes.json", "summary.json", "summary.md", "log.txt",
             "metrics.csv", "metrics.jsonl", "results.json", "skipped.csv", "curves.png", "predictions_*.csv",
             "eval-*.json", "roc_*.png", "confusion_*.png", "calibration.json", "reliability_*.png",
             "oof_predictions.csv")  # fmt: skip
RUN_DIRS = ("checkpoints", "tensorboard", "explain", "seed-*", "fold-*")


def read_marker(root: Path) -> dict[str, Any] | None:
    """RUN/.fptplus-run.json (None when absent), checked."""
    if not (root / MARKER).exists():
        return None
    marker = read_json_schema(root / MARKER, MARKER_SCHEMA, RunError, DAMAGED)
    if marker["tool"] != "fptplus" or marker["format"] > MARKER_FORMAT:
        raise RunError(f"{display(root / MARKER)} was written by a newer fptplus (format {marker['format']}); "
                       "update fptplus to use this run")  # fmt: skip
    return marker


def legacy_run(root: Path) -> bool:
    """A run written before the marker existed: a config.yaml fptplus reads and a valid run.json."""
    from ..config import RunConfig
    from ..errors import FPTPlusError

    if not ((root / CONFIG).is_file() and (root / RUN_JSON).is_file()):
        return False
    try:
        RunConfig.load(root / CONFIG)
        read_run_info(root)
    except FPTPlusError:
        return False
    return True


def is_run(root: Path) -> bool:
    """A folder fptplus made a run of (its marker), or a run from before markers (see `legacy_run`). Another tool's
    folder with a config.yaml is not a run."""
    return (root / MARKER).is_file() or legacy_run(root)


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name not in (MARKER, LOCK)) if root.is_dir() else []


def _walk(root: Path) -> list[str]:
    """Every file and folder under `root` (relative, POSIX), links not followed, the run's own store left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != "store"]
        out += [(rel / d).as_posix() for d in dirnames] + [(rel / f).as_posix() for f in filenames]
    return sorted(p for p in out if p not in (MARKER, LOCK))


def is_run_path(rel: str) -> bool:
    """Whether a relative path is one a run writes (a top-level run file, or anything under a run folder)."""
    parts = rel.split("/")
    if len(parts) == 1:
        return any(fnmatch(parts[0], pat) for pat in RUN_FILES)
    return any(fnmatch(parts[0], pat) for pat in RUN_DIRS)


def claim(root: Path) -> None:
    """Makes `root` a run: the marker, listing what was there before (never removed by --overwrite)."""
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / MARKER, {"format": MARKER_FORMAT, "tool": "fptplus", "preexisting": _walk(root),
                                      "files": []})  # fmt: skip


def record_files(root: Path) -> None:
    """Adds to the marker every file a run writes that is now in `root` and was not there before the run (called
    when a command that writes into a run ends, however it ends)."""
    marker = read_marker(root)
    if marker is None:
        return
    before = set(marker["preexisting"])
    ours = {p for p in _walk(root) if p not in before and is_run_path(p) and (root / p).is_file()}
    marker["files"] = sorted(set(marker["files"]) | ours)
    write_json_atomic(root / MARKER, marker)


def remove_run_files(root: Path) -> None:
    """Deletes exactly the files the marker lists (then the folders they leave empty, unless they were there
    before); the store, the user's files and anything fptplus did not write stay. A run from before markers
    loses only what such runs wrote by name (see `_legacy_files`)."""
    marker = read_marker(root)
    files = marker["files"] if marker is not None else _legacy_files(root)
    before = set(marker["preexisting"]) if marker is not None else set(_walk(root)) - set(files)
    base = root.resolve()
    folders = set()
    for rel in files:
        path = root / rel
        if base not in path.resolve().parents or not (path.is_file() or path.is_symlink()):
            continue  # never outside the run; already gone
        path.unlink()
        folders |= {str(q) for q in Path(rel).parents if str(q) != "."}
    for rel in sorted(folders, key=lambda f: -f.count("/")):  # deepest first
        folder = root / rel
        if rel not in before and folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
    write_json_atomic(root / MARKER, {"format": MARKER_FORMAT, "tool": "fptplus",
                                      "preexisting": [p for p in sorted(before) if (root / p).exists()],
                                      "files": []})  # fmt: skip


def _legacy_files(root: Path) -> list[str]:
    """What a run from before markers wrote, by name: its run files, checkpoints/{best,last}, TensorBoard event
    files, and the seed and fold folders its run.json names."""
    info = read_run_info(root)
    seeds, folds = info.get("seeds") or [], info.get("folds") or 0
    owned = [f"seed-{s}" for s in seeds] + [f"fold-{f}" for f in range(folds if isinstance(folds, int) else 0)]
    out = []
    for rel in _walk(root):
        parts = rel.split("/")
        if not (root / rel).is_file():
            continue
        top = len(parts) == 1 and is_run_path(rel)
        checkpoint = parts[0] == "checkpoints" and len(parts) == 3 and parts[1].split(".")[0] in ("best", "last")
        events = parts[0] == "tensorboard" and parts[-1].startswith("events.out.tfevents.")
        if top or checkpoint or events or parts[0] in owned or parts[0] == "explain":
            out.append(rel)
    return out


def check_paths_utf8(**paths: str | Path | None) -> None:
    """Refuses output/data paths that cannot be written into the run's YAML/JSON/CSV records."""
    for what, path in paths.items():
        if path is not None and not_utf8(str(path)):
            raise RunError(f"the {what} path {display(path)} is not valid UTF-8; {RENAME_HINT}")


def check_output_location(root: Path, data: str | Path) -> None:
    """Refuses an --out that is a file, the dataset folder or inside it (the run's files would mix with the images)."""
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


def check_new_run_folder(root: Path, data: str | Path, overwrite: bool) -> None:
    """The refusals that need no lock and write nothing: a bad location, or a folder of other files without
    --overwrite (called before any data is read)."""
    check_output_location(root, data)
    entries = _entries(root)
    if entries and not is_run(root) and not overwrite:
        shown = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunError(
            f"--out {display(root)} is not empty ({shown}) and is not an fptplus run; choose a new or empty folder, "
            "or pass --overwrite to write the run next to these files (they stay: --overwrite only ever removes "
            "files fptplus wrote)"
        )


def _owner(folder: Path) -> str | None:
    """'run' or 'feature store' when `folder` is one (by the files only fptplus writes there), else None."""
    if (folder / MARKER).is_file() or ((folder / CONFIG).is_file() and (folder / RUN_JSON).is_file()):
        return "run"
    if (folder / "manifest.json").is_file() or (folder / "plan.json").is_file() or (folder / "writer.lock").exists():
        return "feature store"
    return None


def check_output_file(out: str | Path, overwrite: bool, flag: str = "--out") -> Path:
    """Refuses an output file that would replace something: an existing file (unless `overwrite`), a folder, a
    path under a file, or any path inside a run or a feature store (their files are theirs, whatever the flag).
    Creates its missing parent folders; returns the path."""
    out = Path(out)
    if out.is_dir():
        example = display(out / "predictions.csv")
        raise RunError(f"{flag} {display(out)} is a folder; name a file in it (e.g. {example})")
    for folder in [out.parent.resolve(), *out.parent.resolve().parents]:
        if folder.exists() and not folder.is_dir():
            raise RunError(f"{flag} {display(out)}: {display(folder)} is a file, not a folder")
        owner = _owner(folder) if folder.is_dir() else None
        if owner is not None:
            raise RunError(f"{flag} {display(out)} is inside the {owner} {display(folder)}: its files are fptplus's "
                           "own and are never replaced; write elsewhere")  # fmt: skip
    if out.exists() and not overwrite:
        raise RunError(f"{flag} {display(out)} exists; pass --overwrite to replace it, or choose another file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"{flag} {display(out)}: cannot create its folder ({err.strerror or err})") from None
    return out


class RunLock:
    """Held (flock on RUN/.fptplus-run.lock) while a process trains the run: a second `train` into the same folder
    — new, --resume or --overwrite — is refused with the holder's PID, host and start time. The kernel releases
    the lock of a killed process."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root, self.enabled, self.fd = Path(root), enabled, None

    def __enter__(self) -> RunLock:
        from ..store.lock import LOCK_ENV, fcntl, holder_text, read_lock_record, write_lock_record

        if not self.enabled or fcntl is None or os.environ.get(LOCK_ENV, "").lower() == "off":
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = holder_text(read_lock_record(fd))
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(
                    f"{display(self.root)} is being trained right now by {holder}: wait for it to finish (then "
                    "`--resume` or `evaluate` it), or choose another --out; nothing was changed"
                ) from None
            return self  # a filesystem without locks: train unlocked, as before
        write_lock_record(fd)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def seed_dir(root: Path, seeds: list[int], seed: int) -> Path:
    return root if len(seeds) == 1 else root / f"seed-{seed}"


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
