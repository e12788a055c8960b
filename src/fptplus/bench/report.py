"""`fptplus report`: the paper's Table 1 / Table 2 layouts and Fig. 1 / Fig. 2 from finished run folders.

Per run: method, dataset, resolution, learnable-parameter %, test AUC over seeds. Memory is the peak of one
training step measured with the meta accounting for the run's own backbone, resolution and batch size
(FPT/FPT+ from the feature store), so a report needs no GPU; PPE/PME follow eq. 9–10 with the memory ratio
taken against full fine-tuning of the same backbone and resolution.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError
from ..methods import available_methods, get_method
from ..metrics import pme, ppe
from ..trainer.runfolder import read_results
from .memory import measure_step


@dataclass
class RunSummary:
    method: str
    dataset: str
    img_size: tuple[int, int]
    params_percent: float
    aucs: list[float]
    memory_mb: float | None = None
    config: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auc_mean(self) -> float | None:
        return float(np.mean(self.aucs)) if self.aucs else None

    @property
    def auc_std(self) -> float:
        return float(np.std(self.aucs, ddof=1)) if len(self.aucs) > 1 else 0.0


def dataset_name(data: str) -> str:
    p = Path(data)
    return p.parent.name if p.suffix.lower() == ".csv" else p.name


def load_run(path: str | Path) -> RunSummary:
    """Reads a finished run folder (single or multi-seed)."""
    root = Path(path)
    if not (root / "config.yaml").exists():
        raise ConfigError(f"{root} is not a run folder (no config.yaml)")
    cfg = RunConfig.load(root / "config.yaml")
    result_files = (
        [root / "results.json"] if (root / "results.json").exists() else sorted(root.glob("seed-*/results.json"))
    )
    if not result_files:
        raise ConfigError(f"{root} has no results.json yet (is the run finished? continue it with --resume)")
    results = [read_results(f) for f in result_files]
    aucs = [r["test"]["auc"] for r in results if r["test"].get("auc") is not None]
    img = cfg.model.img_size
    return RunSummary(cfg.method, dataset_name(cfg.data.data), (img, img) if isinstance(img, int) else tuple(img),
                      results[0]["params"]["percent"], aucs, config=cfg)  # fmt: skip


def step_memory_mb(method: str, model_cfg: Any, batch_size: int, attention: str = "eager") -> float:
    source = get_method(method).sources(model_cfg)[0]  # FPT/FPT+ from the store, as the paper
    return measure_step(method, model_cfg, batch_size, "meta", attention, source).breakdown.peak / 2**20


def full_ft_memory_mb(run: RunSummary, attention: str) -> float:
    c = run.config.model
    cfg = get_method("full_ft").make_config(backbone=c.backbone, backbone_kwargs=dict(c.backbone_kwargs),
                                            img_size=c.img_size, num_classes=c.num_classes)  # fmt: skip
    return step_memory_mb("full_ft", cfg, run.config.train.batch_size, attention)


def table1(runs: list[RunSummary], attention: str = "eager") -> tuple[list[str], list[list[str]], list[dict]]:
    """Rows per method: params %, memory MB, AUC mean ± std per dataset, average, PPE, PME."""
    datasets = sorted({r.dataset for r in runs})
    by_method: dict[tuple[str, tuple[int, int]], dict[str, RunSummary]] = defaultdict(dict)
    for r in runs:
        by_method[(r.method, r.img_size)][r.dataset] = r
    several = len({r.img_size for r in runs}) > 1
    header = ["Method", "Params %", "Mem. MB", *datasets, "Avg.", "PPE", "PME"]
    rows, records = [], []
    order = sorted(by_method, key=lambda k: (available_methods().index(k[0]), k[1]))
    for key in order:
        method = key[0]
        label = f"{method} @{key[1][0]}" if several else method
        per = by_method[key]
        first = next(iter(per.values()))
        if first.memory_mb is None:
            first.memory_mb = step_memory_mb(method, first.config.model, first.config.train.batch_size, attention)
        full = full_ft_memory_mb(first, attention)
        means = [per[d].auc_mean for d in datasets if d in per and per[d].auc_mean is not None]
        avg = 100 * float(np.mean(means)) if means else None
        cells = [_auc_cell(per[d]) if d in per and per[d].aucs else "–" for d in datasets]
        p = ppe(avg, first.params_percent / 100) if avg is not None else None
        m = pme(avg, first.memory_mb / full) if avg is not None else None
        rows.append([label, f"{first.params_percent:.2f}", _mb(first.memory_mb), *cells,
                     f"{avg:.2f}" if avg is not None else "–", f"{p:.2f}" if p is not None else "–",
                     f"{m:.2f}" if m is not None else "–"])  # fmt: skip
        records.append({"method": label, "params_percent": first.params_percent, "memory_mb": first.memory_mb,
                        "full_ft_memory_mb": full, "avg_auc": avg, "ppe": p, "pme": m,
                        **{f"auc_{d}": per[d].auc_mean for d in datasets if d in per}})  # fmt: skip
    return header, rows, records


def _auc_cell(run: RunSummary) -> str:
    """mean ± std over seeds; one seed has no spread to show."""
    mean = f"{100 * run.auc_mean:.2f}"
    return f"{mean} ± {100 * run.auc_std:.2f}" if len(run.aucs) > 1 else f"{mean} (1 seed)"


def table2(runs: list[RunSummary], attention: str = "eager") -> tuple[list[str], list[list[str]]]:
    """Resolution sweep: memory MB and average AUC per method and resolution."""
    sizes = sorted({r.img_size for r in runs})
    by = defaultdict(list)
    for r in runs:
        by[(r.method, r.img_size)].append(r)
    header = ["Method", *[f"Mem. {s[0]}" for s in sizes], *[f"AUC {s[0]}" for s in sizes]]
    rows = []
    for method in [m for m in available_methods() if any(k[0] == m for k in by)]:
        mems, aucs = [], []
        for s in sizes:
            group = by.get((method, s), [])
            if not group:
                mems.append("–")
                aucs.append("–")
                continue
            r = group[0]
            mem = step_memory_mb(method, r.config.model, r.config.train.batch_size, attention)
            values = [x.auc_mean for x in group if x.auc_mean is not None]
            mems.append(_mb(mem))
            aucs.append(f"{100 * np.mean(values):.2f}" if values else "–")
        rows.append([method, *mems, *aucs])
    return header, rows


def _mb(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def figure1(records: list[dict], path: Path) -> None:
    """AUC vs learnable parameters (log scale); dot area proportional to training memory (paper Fig. 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz.labels import place_labels

    pts = [r for r in records if r["avg_auc"] is not None]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    if pts:
        mem = np.array([r["memory_mb"] for r in pts])
        sizes = 40 + 1500 * mem / max(mem.max(), 1e-9)
        xs, ys = [r["params_percent"] for r in pts], [r["avg_auc"] for r in pts]
        ax.scatter(xs, ys, s=sizes, alpha=0.5, c=range(len(pts)), cmap="tab10", edgecolors="k")
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.25)  # big dots and their labels stay inside the axes
    ax.set_xlabel("learnable parameters (%)")
    ax.set_ylabel("average test AUC (%)")
    ax.set_title("AUC vs learnable parameters (dot size = training memory)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if pts:  # after the layout: labels are placed in display space, off the dots and off each other
        texts = [f"{r['method']}\n{_mb(r['memory_mb'])} MB" for r in pts]
        place_labels(ax, xs, ys, texts, clearance_pt=[float(np.sqrt(s)) / 2 for s in sizes])
    fig.savefig(path)
    plt.close(fig)


def figure2(curves: dict[str, list[tuple[int, float]]], path: Path, gpu_mb: float | None, gpu_name: str) -> None:
    """Training memory vs input resolution per method, with a line at a GPU's memory (paper Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    for i, (label, pts) in enumerate(curves.items()):
        style = "-" if "fpt" not in label else "--" if "online" in label else "-"
        lw = 2.5 if "fpt" in label and "online" not in label else 1.2
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linestyle=style, linewidth=lw, label=label,
                color=plt.cm.tab20(i % 20))  # fmt: skip
    if gpu_mb:
        ax.axhline(gpu_mb, color="red", linestyle="--", label=f"{gpu_name} ({gpu_mb:.0f} MB)")
    ax.set_yscale("log")
    ax.set_xlabel("input resolution (px)")
    ax.set_ylabel("peak training memory (MB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def memory_curves(runs: list[RunSummary], sizes: list[int], attention: str) -> dict[str, list[tuple[int, float]]]:
    """Meta-accounted peak memory over resolutions for each method among the runs (its own run's settings)."""
    curves = {}
    for method in [m for m in available_methods() if m in {r.method for r in runs}]:
        run = next(r for r in runs if r.method == method)
        pts = []
        for s in sizes:
            cfg = dataclasses.replace(run.config.model, img_size=s, weights=None)
            pts.append((s, step_memory_mb(method, cfg, run.config.train.batch_size, attention)))
        curves[method] = pts
    return curves


def write_report(
    run_dirs: list[str | Path], out: str | Path, attention: str = "eager", gpu_mb: float | None = 48 * 1024,
    gpu_name: str = "48 GB GPU",
) -> dict[str, Path]:  # fmt: skip
    """Table 1 (+ Table 2 when the runs span several resolutions), their CSVs, and Fig. 1 / Fig. 2."""
    return write_report_summaries([load_run(d) for d in run_dirs], out, attention, gpu_mb, gpu_name)


def write_report_summaries(
    runs: list[RunSummary], out: str | Path, attention: str = "eager", gpu_mb: float | None = 48 * 1024,
    gpu_name: str = "48 GB GPU",
) -> dict[str, Path]:  # fmt: skip
    """`write_report` from run summaries (e.g. rebuilt from a benchmark's committed records)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    header, rows, records = table1(runs, attention)
    (out / "table1.md").write_text(markdown(header, rows))
    write_csv(out / "table1.csv", header, rows)
    written["table1"] = out / "table1.md"
    figure1(records, out / "fig1.png")
    written["fig1"] = out / "fig1.png"
    sizes = sorted({r.img_size for r in runs})
    if len(sizes) > 1:
        h2, r2 = table2(runs, attention)
        (out / "table2.md").write_text(markdown(h2, r2))
        write_csv(out / "table2.csv", h2, r2)
        written["table2"] = out / "table2.md"
    res = [s[0] for s in sizes] if len(sizes) > 1 else [sizes[0][0] // 2, sizes[0][0], 2 * sizes[0][0]]
    patch = measure_patch(runs[0].config)
    res = sorted({max(patch, (s // patch) * patch) for s in res})
    curves = memory_curves(runs, res, attention)
    figure2(curves, out / "fig2.png", gpu_mb, gpu_name)
    written["fig2"] = out / "fig2.png"
    (out / "report.json").write_text(json.dumps({"table1": records, "memory_curves": curves}, indent=1))
    return written


def measure_patch(cfg: RunConfig) -> int:
    from ..backbones import lpm_spec

    return lpm_spec(cfg.model.backbone, cfg.model.img_size, cfg.model.backbone_kwargs).patch_size[0]
