"""Tables and figures of a benchmark plan from its run records (see `driver.py`).

RESULTS/table.md|json   one row per run: resolution, lr, epochs × seeds, val AUC (or the `cv_folds` rows'
                        mean fold validation AUC, "CV5 …", which chose their lr), test AUC (mean ± std over seeds,
                        and the mean of the per-seed bootstrap 95 % CIs), the plan's pair AUC, learnable %,
                        steady-state step memory (eager / fused, meta accounting), s/epoch, PPE, PME
RESULTS/memory.md       step memory of every method at every resolution for the plan's memory backbones
RESULTS/fig_auc_memory.png      test AUC vs training memory, one point per method × resolution
RESULTS/fig_auc_resolution.png  test AUC vs resolution per method
RESULTS/table1.md, fig1.png, ...  `fptplus report`'s paper layout for the runs kept by validation
RESULTS/compare.md|json the plan's `compare` pairs: paired bootstrap of A − B test AUC over the same images (from the
                        run folders; without them, the committed entry for the same two folders is kept)
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig, TrainConfig, build_dataclass
from ..errors import ConfigError
from ..logs import get_logger, info_of
from ..methods import available_methods, get_method
from ..metrics import pme, ppe
from .plan import Plan
from .report import RunSummary, step_memory_mb, write_report_summaries

_log = get_logger("bench")


def model_config(record: dict[str, Any]) -> Any:
    method = get_method(record["method"])
    return build_dataclass(method.config_cls, {**record["model"], "weights": None}, "model", method.make_config)


def full_ft_config(cfg: Any) -> Any:
    return get_method("full_ft").make_config(backbone=cfg.backbone, backbone_kwargs=dict(cfg.backbone_kwargs),
                                             img_size=cfg.img_size, num_classes=cfg.num_classes)  # fmt: skip


def with_memory(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds the memory columns and PPE/PME (today's accounting) to each record."""
    out = []
    for r in records:
        cfg, batch = model_config(r), r.get("batch_size", 16)
        eager = step_memory_mb(r["method"], cfg, batch, "eager")
        fused = step_memory_mb(r["method"], cfg, batch, "fused")
        full = step_memory_mb("full_ft", full_ft_config(cfg), batch, "eager")
        auc = 100 * float(np.mean(r["auc"])) if r["auc"] else None  # None: a learning rate CV did not choose
        out.append({**r, "memory_mb_eager": eager, "memory_mb_fused": fused, "full_ft_memory_mb_eager": full,
                    "ppe": ppe(auc, r["params_percent"] / 100) if auc is not None else None,
                    "pme": pme(auc, eager / full) if auc is not None else None})  # fmt: skip
    return out


def select_by_val(records: list[dict[str, Any]]) -> set[int]:
    """Per (row, resolution): the run (learning rate) with the best mean validation AUC — or, for a `cv_folds` row,
    the best mean fold validation AUC of its cross-validation (kept only once it has test AUCs)."""

    def score(r: dict[str, Any]) -> float:
        values = r.get("cv_auc") or [v for v in r["val_auc"] if v is not None]
        return float(np.mean(values or [0]))

    best: dict[tuple[str, int], int] = {}
    for i, r in enumerate(records):
        key = (r["name"], r["img_size"])
        if key not in best or score(r) > score(records[best[key]]):
            best[key] = i
    return {i for i in best.values() if records[i]["auc"]}


def _mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}"


def _ci(cis: list[Any]) -> str:
    cis = [c for c in cis if c]
    if not cis:
        return "–"
    lo, hi = np.mean([c[0] for c in cis]), np.mean([c[1] for c in cis])
    return f"{100 * lo:.1f}–{100 * hi:.1f}"


def table(plan: Plan, records: list[dict[str, Any]], chosen: set[int]) -> str:
    pair = f" | {plan.pair[0]} vs {plan.pair[1]} AUC" if plan.pair else ""
    head = (f"| method | res. | lr | epochs × seeds | val AUC | test AUC | 95 % CI (mean of seeds){pair} | learnable % "
            "| peak step MB (eager / fused) | s / epoch | PPE | PME |")  # fmt: skip
    lines = [head, "|" + "---|" * head.count(" | ")]
    for i, r in enumerate(records):
        name = r["name"] if i in chosen else f"({r['name']})"
        source = " (stored features)" if r.get("features") else ""
        epoch = f"{r['epoch_seconds']:.1f}" if r.get("epoch_seconds") else "<1"
        lr = ", ".join(sorted(set(r["chosen"]), key=r["chosen"].index)) if r.get("chosen") else f"{r['lr']:g}"
        runs = f"CV × {len(r['seeds'])}" if r.get("chosen") else f"{r['epochs']} × {len(r['seeds'])}"
        val = _mean_std(r["val_auc"])
        if r.get("cv_auc"):  # what chose the learning rate: the mean fold validation AUC
            val = f"CV{len(r['cv_auc'])} {_mean_std(r['cv_auc'])}" + (f"; val {val}" if r["val_auc"] else "")
            runs = f"{r['epochs']} × {len(r['seeds'])}" if r["seeds"] else f"CV {r['epochs']} × 1"
        cells = [f"{name}{source}", str(r["img_size"]), lr, runs, val, _mean_std(r["auc"]),
                 _ci(r["auc_ci"])]  # fmt: skip
        if plan.pair:
            cells.append(_mean_std(r["pair_auc"]))
        mb = lambda v: f"{v:,.0f}" if v >= 1 else "<1"  # noqa: E731  (a probe's step from the store: features only)
        per = lambda v: f"{v:.2f}" if v is not None else "–"  # noqa: E731  (None: no test AUC)
        cells += [f"{r['params_percent']:.4g}", f"{mb(r['memory_mb_eager'])} / {mb(r['memory_mb_fused'])}", epoch,
                  per(r["ppe"]), per(r["pme"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# fptplus code that never runs in a training step (a change there does not recompute memory.md)
MEMORY_IRRELEVANT = {"app", "audit", "cli", "viz", "demo", "compare.py", "tune.py", "calibration.py"}


def memory_key(plan: Plan, num_classes: int) -> str:
    """What memory.md depends on: the plan's memory section and backbone settings, the class count, the methods,
    and fptplus's own code (any change to it recomputes the tables) but for the parts no training step runs."""
    import dataclasses
    import hashlib

    import fptplus

    h = hashlib.sha256()
    h.update(json.dumps([dataclasses.asdict(plan.memory), plan.backbone, plan.backbone_kwargs, num_classes,
                         available_methods()], sort_keys=True, default=str).encode())  # fmt: skip
    root = Path(fptplus.__file__).parent
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] not in MEMORY_IRRELEVANT:
            h.update(path.read_bytes())
    return f"memory tables sha256:{h.hexdigest()}"


def _memory_current(path: Path, key: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip() == f"<!-- {key} -->"
    except OSError:
        return False


def memory_markdown(plan: Plan, num_classes: int) -> str:
    """Steady-state step memory of every method at every resolution, per backbone (eager / fused MB)."""
    from ..backbones import lpm_spec
    from .memory import memory_table

    spec = plan.memory
    if not spec.backbones or not spec.img_sizes:
        return ""
    parts = []
    for backbone in spec.backbones:
        kwargs = plan.backbone_kwargs if backbone == plan.backbone else {}
        patch = lpm_spec(backbone, 224, kwargs).patch_size[0]
        sizes = [max(patch, round(s / patch) * patch) for s in spec.img_sizes]
        cells: dict[str, dict[int, str]] = defaultdict(dict)
        for size in sizes:
            rows = memory_table(available_methods(), backbone, size, spec.batch_size, "meta", num_classes=num_classes,
                                backbone_kwargs=kwargs, overrides=spec.overrides)  # fmt: skip
            by = {(r.label, r.attention): r.breakdown.peak / 2**20 for r in rows}
            for label in dict.fromkeys(r.label for r in rows):
                cells[label][size] = f"{by[(label, 'eager')]:,.0f} / {by[(label, 'fused')]:,.0f}"
        title = f"### {backbone}, batch {spec.batch_size} (MB, eager / fused attention)"
        header = "| method | " + " | ".join(f"{s} px" for s in sizes) + " |"
        lines = [title, "", header, "|---|" + "---|" * len(sizes)]
        lines += [f"| {label} | " + " | ".join(row[s] for s in sizes) + " |" for label, row in cells.items()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def figures(records: list[dict[str, Any]], chosen: set[int], results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = [records[i] for i in sorted(chosen)]
    names = list(dict.fromkeys(r["name"] for r in kept))
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    from ..viz.labels import place_labels

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    xs, ys = [], []
    for r in kept:
        mean, std = 100 * np.mean(r["auc"]), 100 * np.std(r["auc"], ddof=1) if len(r["auc"]) > 1 else 0.0
        ax.errorbar(r["memory_mb_eager"], mean, yerr=std, fmt="o", color=colors[r["name"]], capsize=3)
        xs.append(r["memory_mb_eager"])
        ys.append(mean)
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.15)
    ax.set_xlabel("peak memory of one steady-state training step (MB, eager attention, log scale)")
    ax.set_ylabel("test AUC (%), mean ± std over seeds")
    ax.set_title("accuracy vs training memory (one point per method × resolution)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if kept:  # labels placed off the dots and off each other (display space: after the layout)
        place_labels(ax, xs, ys, [f"{r['name']}@{r['img_size']}" for r in kept], clearance_pt=5.0)
    fig.savefig(results / "fig_auc_memory.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name in names:
        rs = sorted((r for r in kept if r["name"] == name), key=lambda r: r["img_size"])
        xs = [r["img_size"] for r in rs]
        means = [100 * np.mean(r["auc"]) for r in rs]
        stds = [100 * np.std(r["auc"], ddof=1) if len(r["auc"]) > 1 else 0.0 for r in rs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name, color=colors[name])
    ax.set_xlabel("input resolution of the large model (px)")
    ax.set_ylabel("test AUC (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results / "fig_auc_resolution.png")
    plt.close(fig)


def summary(plan: Plan, r: dict[str, Any]) -> RunSummary:
    """A record as `fptplus report` reads a run folder."""
    config = RunConfig(r["method"], model_config(r), train=TrainConfig(batch_size=r.get("batch_size", 16)))
    return RunSummary(r["method"], plan.name, (r["img_size"], r["img_size"]), r["params_percent"], list(r["auc"]),
                      config=config)  # fmt: skip


COMPARE_JSON = "compare.json"
# a committed comparison whose mean test AUC differs from its run's record by more than this is of an earlier run
# (compare reads the predictions CSV, whose rounded probabilities tie a few pairs: ≤ 0.02 points in the committed plans)
STALE_AUC_POINTS = 0.05


def comparisons(plan: Plan, rows: list[dict[str, Any]], chosen: set[int], runs: Path | None, results: Path,
                log) -> list[dict[str, Any]]:  # fmt: skip
    """The plan's `compare` pairs between the runs validation kept: fresh from the run folders, else committed."""
    from ..compare import compare, read_run_predictions
    from ..errors import RunError
    from ..files import read_json

    kept = {(rows[i]["name"], rows[i]["img_size"]): rows[i]["folder"] for i in chosen}
    mean_auc = {rows[i]["folder"]: 100 * float(np.mean(rows[i]["auc"])) for i in chosen if rows[i]["auc"]}
    old = read_json(results / COMPARE_JSON, ConfigError) if (results / COMPARE_JSON).exists() else []
    committed = {(c["folder_a"], c["folder_b"]): c for c in old}
    out = []
    for a, b in plan.compare:
        if a not in kept or b not in kept:
            log(f"compare {a[0]}@{a[1]} vs {b[0]}@{b[1]}: not both recorded yet")
            continue
        fa, fb = kept[a], kept[b]
        try:
            if runs is None:
                raise RunError("no run folders")
            pa, pb = read_run_predictions(runs / fa), read_run_predictions(runs / fb)
            result = compare(pa, pb).to_dict()
            with_seeds = compare(pa, pb, seeds=True)  # the interval that carries the seeds' spread too
            result |= {"ci_seeds": with_seeds.ci, "p_value_seeds": with_seeds.p_value}
        except RunError as err:
            if (fa, fb) not in committed:
                log(f"compare {fa} vs {fb}: {err}; left out")
                continue
            result = committed[(fa, fb)]
            stale = [f for f, key in ((fa, "auc_a"), (fb, "auc_b"))
                     if abs(result[key] - mean_auc.get(f, -1)) > STALE_AUC_POINTS]  # fmt: skip
            if stale:  # a side was trained again since: its committed pairing is of predictions no longer recorded
                log(f"compare {fa} vs {fb}: the committed comparison predates the current run of {' and '.join(stale)} "
                    f"(test AUC changed); left out — keep both run folders to compare them again")  # fmt: skip
                continue
        out.append(result | {"a": f"{a[0]}@{a[1]}", "b": f"{b[0]}@{b[1]}", "folder_a": fa, "folder_b": fb})
    return out


def compare_markdown(entries: list[dict[str, Any]]) -> str:
    lines = [
        "| A | B | test images | A: AUC (95 % CI) | B: AUC (95 % CI) | A − B (95 % CI) | p | A − B, seeds "
        "resampled too (95 % CI) | p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in entries:
        seeds = f"{c['seeds_a']} / {c['seeds_b']} seeds"
        with_seeds = "— | —"  # recorded before the column existed
        if c.get("ci_seeds"):
            with_seeds = f"{c['ci_seeds'][0]:+.1f} to {c['ci_seeds'][1]:+.1f} | {c['p_value_seeds']:.3f}"
        lines.append(
            f"| {c['a']} (`{c['folder_a']}`) | {c['b']} (`{c['folder_b']}`) | {c['n']} ({seeds}) | "
            f"{c['auc_a']:.2f} ({c['ci_a'][0]:.1f}–{c['ci_a'][1]:.1f}) | "
            f"{c['auc_b']:.2f} ({c['ci_b'][0]:.1f}–{c['ci_b'][1]:.1f}) | "
            f"{c['difference']:+.2f} ({c['ci'][0]:+.1f} to {c['ci'][1]:+.1f}) | {c['p_value']:.3f} | {with_seeds} |"
        )
    return "\n".join(lines) + (
        "\n\nAUC = mean over a run's seeds; intervals: paired percentile bootstrap over the test images "
        f"({entries[0]['samples'] if entries else 2000} resamples, every seed of both runs scored on each); p: "
        "two-sided bootstrap p-value of A − B = 0 (`fptplus compare A B`). The last two columns also draw each run's "
        "seeds with replacement in every resample (`fptplus compare A B --resample-seeds`): the interval then "
        "carries the spread between training seeds too (— : recorded before that column existed).\n"
    )


def render(plan: Plan, records: list[dict[str, Any]], results: Path, log=None,
           runs: Path | None = None, keep_memory: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Writes every table and figure of the plan; returns the records with their computed columns.

    `keep_memory`: leave an existing memory.md as it is even when its key (the code) changed."""
    log = info_of(_log, log)
    results.mkdir(parents=True, exist_ok=True)
    rows = with_memory(records)
    chosen = select_by_val(rows)
    for i, r in enumerate(rows):
        r["selected"] = i in chosen
    text = table(plan, rows, chosen)
    (results / "table.md").write_text(text, encoding="utf-8")
    (results / "table.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    log(text)
    if rows:
        classes = rows[0]["model"].get("num_classes", 2)
        key = memory_key(plan, classes)
        kept = keep_memory and (results / "memory.md").exists()
        if kept and not _memory_current(results / "memory.md", key):
            log(f"{results / 'memory.md'} kept as it is (--keep-memory), although fptplus's code changed since")
        if not kept and not _memory_current(results / "memory.md", key):  # minutes of meta accounting: if changed
            memory = memory_markdown(plan, classes)
            if memory:
                (results / "memory.md").write_text(f"<!-- {key} -->\n{memory}", encoding="utf-8")
        figures(rows, chosen, results)
        # the paper layout has one row per method and resolution: variant rows (ablations, int8 stores) stay in
        # table.md under their own names, so they never stand in for the method's own row
        main = [i for i in sorted(chosen) if rows[i]["name"] == rows[i]["method"]]
        write_report_summaries([summary(plan, rows[i]) for i in main], results)
    if plan.compare:
        entries = comparisons(plan, rows, chosen, runs, results, log)
        (results / COMPARE_JSON).write_text(json.dumps(entries, indent=1), encoding="utf-8")
        (results / "compare.md").write_text(compare_markdown(entries), encoding="utf-8")
    return rows
