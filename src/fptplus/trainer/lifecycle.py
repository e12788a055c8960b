"""Whether `train --out RUN` starts a run or continues one, decided once under the run's lock: a run that never
trained starts over, the same command continues an interrupted run, --overwrite removes only what fptplus wrote, and
anything else is refused with the command the user most likely wants (see `runfolder` for the marker and lock)."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError, RunError
from ..files import write_json_atomic
from .runfolder import MARKER, claim, is_run, is_run_path, read_marker, read_run_info, remove_run_files, seed_dir


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
