"""What a finished `fptplus train` says last: the result in one table and what to run next (RUN/summary.md)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..logs import get_logger
from ..methods import get_method
from .callbacks import Callback

_log = get_logger("train")

METRICS = (("auc", "test AUC", 100), ("balanced_accuracy", "balanced accuracy", 100), ("macro_f1", "macro F1", 100),
           ("kappa", "kappa", 1))  # fmt: skip


def _cell(summary: dict[str, Any], key: str, scale: float) -> str:
    value = summary["test"].get(key)
    if value is None:
        return "n/a"
    mean = f"{scale * value['mean']:.2f}" if scale != 1 else f"{value['mean']:.3f}"
    if len(value["values"]) < 2:
        return mean
    std = f"{scale * value['std']:.2f}" if scale != 1 else f"{value['std']:.3f}"
    return f"{mean} ± {std}"


def next_steps(cfg: RunConfig, root: Path, seeds: list[int]) -> list[str]:
    """Commands worth running next on this run (quoted so they can be pasted), each with what it gives."""
    run = shlex.quote(str(root))
    steps = [
        (f"fptplus evaluate {run} --split test", "metrics, ROC and confusion matrix again"),
        (f"fptplus predict {run} NEW_IMAGES/ --out predictions.csv", "class probabilities for new images"),
    ]
    if get_method(cfg.method).fuses_lpm(cfg.model):  # a model with fused frozen-model layers: explainable
        steps.append((f"fptplus explain {run} IMAGE.png", "selected tokens and prompt attention"))
    if len(seeds) == 1:
        config = shlex.quote(str(root / "config.yaml"))
        steps.append((f"fptplus train --config {config} --seeds 0,1,2,3,4 --out {run}-seeds", "mean ± std over seeds"))
    steps.append((f"fptplus report {run} OTHER_RUNS... --out report/", "Table 1 / Fig. 1 against other methods"))
    if cfg.data.data:
        data, out = shlex.quote(str(cfg.data.data)), shlex.quote(str(root / "audit"))
        audit = f"fptplus audit --data {data} --run {run} --out {out}"
        steps.append((audit, "shortcuts, copies and leaks in the data, against this AUC"))
    width = min(max(len(cmd) for cmd, _ in steps), 72)  # long paths: no padding to align on
    return [f"{cmd:<{width}}  # {what}" for cmd, what in steps]


def summary_markdown(cfg: RunConfig, root: Path, summary: dict[str, Any], seeds: list[int]) -> str:
    """RUN/summary.md: the test metrics (mean ± std over seeds) and the next commands."""
    params = summary["params"]
    head = "| method | seeds | " + " | ".join(label for _, label, _ in METRICS) + " | learnable % |"
    row = f"| {cfg.method} | {', '.join(map(str, seeds))} | " + " | ".join(
        _cell(summary, key, scale) for key, _, scale in METRICS
    )
    row += f" | {params['percent']:.4g} |"
    kappa = "quadratic-weighted (--ordinal)" if cfg.data.ordinal else "unweighted (nominal classes)"
    memory = summary.get("memory") or {}
    said = []
    if memory.get("train_step_mb") is not None:
        said.append(f"one training step {memory['train_step_mb']:,.0f} MB (its tensors at batch "
                    f"{cfg.train.batch_size}, fused attention, exact accounting: train_step_mb)")  # fmt: skip
    if memory.get("process_peak_rss_mb") is not None:
        said.append(f"this process peaked at {memory['process_peak_rss_mb']:,.0f} MB resident (Python, libraries, "
                    "preload, data loaders: process_peak_rss_mb)")  # fmt: skip
    lines = [f"# {root.name}", "", head, "|" + "---|" * (len(METRICS) + 3), row, "",
             f"Kappa: {kappa}. Per-seed results: results.json in the run folder (seed-*/ with several seeds).", "",
             *([f"Memory: {'; '.join(said)}.", ""] if said else []),
             "## Next", "", "```bash", *next_steps(cfg, root, seeds), "```", ""]  # fmt: skip
    return "\n".join(lines)


class RunSummary(Callback):
    """At the end of `train`: RUN/summary.md (the test metrics, mean ± std over seeds, and the next commands),
    and the same in the log."""

    def on_train_end(self, root: Path, cfg: RunConfig, summary: dict[str, Any], seeds: list[int]) -> None:
        text = summary_markdown(cfg, root, summary, seeds)
        (root / "summary.md").write_text(text, encoding="utf-8")
        steps = "\n  ".join(next_steps(cfg, root, seeds))
        _log.info("\n" + text.split("## Next", 1)[0].strip() + "\n\nnext:\n  " + steps)


SUMMARY_KEYS = ("auc", "accuracy", "balanced_accuracy", "macro_f1", "kappa")


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
