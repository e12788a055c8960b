"""`fptplus audit`: the shortcuts, copies and leaks of a dataset, found before a model learns them.

    facts    per image: header facts, thumbnail, hashes (`features`, cached in OUT/cache)
    families trivial-feature baselines: cross-validated logistic regression per feature family (`baselines`)
    copies   byte-identical, pixel-identical and near-duplicate images across splits, labels, groups (`duplicates`)
    splits   groups in two splits, label balance, small classes, undecodable images (`checks`)
    report   OUT/audit.md, OUT/audit.json, pictures, and a short verdict (`report`)

Warnings (each also in audit.json "warnings"): a family whose cross-validated AUC reaches `threshold` (default 0.75:
a simple statistic then tells the labels apart three times out of four), any copy that crosses a split, a label or
a patient group, a group in two splits, a class with fewer than `min_per_split` images in a split, an image that
does not decode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.copies import record_clusters
from ..data.index import DataIndex, label_bits
from ..files import display, write_json_atomic
from .baselines import FamilyResult, run_baselines
from .checks import balance, decode_failures, leaked_groups, small_classes
from .duplicates import DuplicateGroup, find_duplicates
from .features import collect
from .groups import write_grouped_csv


@dataclass
class AuditOptions:
    """threshold: family AUC that raises a warning; max_distance, min_correlation: near-duplicates are within
    max_distance bits of 64 (perceptual hash) and their grey thumbnails correlate >= min_correlation;
    min_per_split: smallest class size per split without a warning; bootstrap: CI resamples; workers: decoding
    processes."""

    threshold: float = 0.75
    max_distance: int = 4
    min_per_split: int = 10
    bootstrap: int = 500
    workers: int = 2
    min_correlation: float = 0.97


@dataclass
class Task:
    """One labelling the baselines predict: the classes, or (multi-label) one label against its absence."""

    name: str
    labels: np.ndarray  # (n_usable,)
    classes: list[str]


def tasks_of(index: DataIndex, usable: list[int]) -> list[Task]:
    labels = np.array([index.samples[i].label for i in usable], dtype=np.int64)
    if not index.multilabel:
        return [Task("classes", labels, list(index.classes))]
    bits = label_bits(labels, len(index.classes))
    return [Task(c, bits[:, j], [f"no {c}", c]) for j, c in enumerate(index.classes)]


def run_audit(index: DataIndex, out: str | Path, options: AuditOptions | None = None, run: str | Path | None = None,
              log: Callable[[str], None] = print, data: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Audits `index` into `out` (audit.md, audit.json, grouped.csv, pictures, cache/); returns the audit.json
    record. `data`: the dataset as the user names it (`--data`), under which `train` finds the copies found here."""
    from .report import render

    options = options or AuditOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    facts, thumbs = collect(index, out / "cache", options.workers, log)
    usable = [i for i, f in enumerate(facts) if not f.error]
    groups = [index.samples[i].group or f"#{i}" for i in usable]
    results: dict[str, list[FamilyResult]] = {}
    for task in tasks_of(index, usable):
        if len(np.unique(task.labels)) < 2:
            log(f"audit: {task.name}: a single value over the decodable images; no baseline")
            continue
        log(f"audit: trivial-feature baselines for {task.name} ({len(usable)} images, group-aware 5-fold CV)")
        results[task.name] = run_baselines([facts[i] for i in usable], thumbs[usable], task.labels, groups,
                                           task.classes, log, options.bootstrap,
                                           [index.samples[i].group or "" for i in usable])  # fmt: skip
    copies, detail = find_duplicates(index, facts, thumbs, options.max_distance, options.min_correlation)
    clusters = [g.members for g in copies]
    grouped = write_grouped_csv(index, clusters, out)
    if data is not None:
        record_clusters(data, index, clusters, out / "audit.md")
    record = _record(index, facts, results, copies, options, run)
    record["grouped_csv"] = str(grouped)
    record["detail_threshold"] = detail
    crossing = [g for g in copies if "split" in g.crosses]
    if crossing:
        official = "automatic split" not in index.source
        record["warnings"].append(
            f"{len(crossing)} group(s) of copies lie in more than one split: {grouped} gives each a `group` (merged "
            "with the dataset's own groups); "
            + ("train on it — `fptplus train --data " + str(grouped) + " ...` — and its automatic split keeps every "
               "group in one split" if not official else "its split column is your official one: move the copies "
               "that cross it, or drop the column to let fptplus split by group")
        )  # fmt: skip
    render(out, index, facts, thumbs, usable, tasks_of(index, usable), results, record)
    write_json_atomic(out / "audit.json", record)
    return record


def _run_auc(run: str | Path) -> float | None:
    """The test AUC of a trained run (mean over seeds or folds when it has several)."""
    import json

    root = Path(run)
    for name in ("summary.json", "results.json"):
        path = root / name
        if path.exists():
            test = json.loads(path.read_text()).get("test", {}).get("auc")
            return test["mean"] if isinstance(test, dict) else test
    from ..errors import RunError

    raise RunError(f"{display(root)} holds no summary.json or results.json: pass a finished `fptplus train` run")


def _record(index, facts, results, copies: list[DuplicateGroup], options: AuditOptions, run) -> dict[str, Any]:
    warnings: list[str] = []
    shortcuts: list[dict[str, str]] = []  # the (task, family) pairs warned about: the report draws each
    for task, fams in results.items():
        where = "" if task == "classes" else f" ({task})"
        for r in fams:
            hits = [("all classes", r.auc)] if r.auc is not None else []
            hits += [(f"{c} vs rest", v) for c, v in r.per_class.items() if v is not None]
            hits += [(p, v) for p, v in r.pairs.items() if v is not None]
            strong = [(what, v) for what, v in hits if v >= options.threshold]
            if strong:
                shortcuts.append({"task": task, "family": r.family})
                shown = ", ".join(f"{what} {100 * v:.1f}" for what, v in strong)
                warnings.append(f"shortcut{where}: {r.family} features alone separate the labels (AUC {shown}; "
                                f"warning at {100 * options.threshold:.0f})")  # fmt: skip
    notes: list[str] = []
    for g in copies:
        names = ", ".join(display(index.samples[i].path) for i in g.members[:4])
        more = f" (+{len(g.members) - 4})" if len(g.members) > 4 else ""
        if g.crosses:
            warnings.append(f"{g.kind} images across {' and '.join(g.crosses)}: {names}{more}")
        else:
            notes.append(f"{g.kind} images in one split, label and group (counted twice, no leak): {names}{more}")
    leaks = leaked_groups(index)
    if leaks:
        shown = ", ".join(f"{g} ({'/'.join(s)})" for g, s in list(leaks.items())[:5])
        warnings.append(f"{len(leaks)} group(s) in more than one split: {shown}")
    small = small_classes(index, options.min_per_split)
    warnings += [f"small: {m} (its metrics will have wide CIs)" for m in small]
    failures = decode_failures(facts)
    if failures:
        warnings.append(f"{len(failures)} image(s) do not decode: {failures[0]}")
    run_auc = _run_auc(run) if run else None
    return {
        "data": {
            "root": str(index.root),
            "source": index.source,
            "images": len(index.samples),
            "classes": list(index.classes),
            "multilabel": index.multilabel,
        },
        "options": options.__dict__,
        "warnings": warnings,
        "shortcuts": shortcuts,
        "notes": notes,
        "baselines": {task: [r.to_dict() for r in fams] for task, fams in results.items()},
        "duplicates": [g.to_dict(index) for g in copies],
        "leaked_groups": leaks,
        "balance": balance(index),
        "small_classes": small,
        "undecodable": failures,
        "run": {"path": str(run), "test_auc": run_auc} if run else None,
    }
