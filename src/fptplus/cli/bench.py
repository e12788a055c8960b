"""`fptplus bench memory / speed` and `fptplus report`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bench.options import MemoryOptions, SpeedOptions
from ..config import add_dataclass_flags, build_dataclass, given
from ..errors import ConfigError
from ..methods import Method, get_method
from ..overrides import parse_value
from .common import FORMATTER, parse_methods, resolve_device


def cmd_bench_memory(args: argparse.Namespace, method: Method) -> int:
    from ..bench.memory import memory_table

    o: MemoryOptions = build_dataclass(MemoryOptions, given(args, MemoryOptions), "bench memory")
    device = resolve_device(o.device)
    attentions = ("eager", "fused") if o.attention == "both" else (o.attention,)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = parse_value(value.strip())
    rows = memory_table(parse_methods(o.methods), o.backbone, o.img_size, o.batch_size, device,
                        attentions, o.num_classes, o.backbone_kwargs, overrides)  # fmt: skip
    full = {r.attention: r.breakdown.peak for r in rows if r.method == "full_ft"}
    records = []
    for r in rows:
        d = r.to_dict()
        d["ratio_to_full_ft"] = r.breakdown.peak / full[r.attention] if r.attention in full else None
        records.append(d)
    if args.json:
        print(json.dumps(records))
        return 0
    h, w = rows[0].img_size
    print(
        f"peak training memory, one steady-state AdamW step: {o.backbone} @ {h}x{w}, batch {o.batch_size}, "
        f"device {device}{' (exact accounting of live tensors, nothing allocated)' if device == 'meta' else ''}"
    )
    print(f"{'method':22s} {'attention':9s} {'peak MB':>10s} {'vs full FT':>10s} {'weights':>9s} {'grads':>9s} "
          f"{'optim':>9s} {'activ.':>9s}")  # fmt: skip
    for d in records:
        ratio = f"{100 * d['ratio_to_full_ft']:9.2f}%" if d["ratio_to_full_ft"] is not None else f"{'–':>10s}"
        print(f"{d['label']:22s} {d['attention']:9s} {d['peak_mb']:10.0f} {ratio} {d['weights_mb']:9.0f} "
              f"{d['gradients_mb']:9.0f} {d['optimizer_mb']:9.0f} {d['activations_mb']:9.0f}")  # fmt: skip
    return 0


def cmd_bench_speed(args: argparse.Namespace, method: Method) -> int:
    import torch

    from ..bench.speed import preload_speed, train_speed

    o: SpeedOptions = build_dataclass(SpeedOptions, given(args, SpeedOptions), "bench speed")
    if o.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bench speed --device cuda: no CUDA device here; use --device cpu (or auto)")
    device = "cuda" if o.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    rows = []
    for name in parse_methods(o.methods):
        m = get_method(name)
        cfg = m.make_config(backbone=o.backbone, img_size=o.img_size, num_classes=o.num_classes,
                            backbone_kwargs=dict(o.backbone_kwargs))  # fmt: skip
        for source in m.sources(cfg):
            rows.append(train_speed(name, cfg, o.batch_size, o.steps, device, source))
            print(f"train  {rows[-1].label:22s} {rows[-1].samples_per_s:9.2f} samples/s", flush=True)
    cfg = get_method("fpt_plus").make_config(backbone=o.backbone, img_size=o.img_size,
                                             backbone_kwargs=dict(o.backbone_kwargs))  # fmt: skip
    bare, pre = preload_speed(cfg, o.batch_size, o.steps, device)
    print(f"preload {pre.samples_per_s:.2f} img/s vs bare frozen forward {bare.samples_per_s:.2f} img/s "
          f"= {100 * pre.samples_per_s / bare.samples_per_s:.1f} %")  # fmt: skip
    if args.json:
        print(json.dumps([r.to_dict() for r in [*rows, bare, pre]]))
    return 0


def cmd_report(args: argparse.Namespace, method: Method) -> int:
    from ..bench.report import write_report

    written = write_report(args.runs, args.out, args.attention, args.gpu_mb, args.gpu_name)
    for name, path in written.items():
        print(f"{name}: {path}")
    print((Path(args.out) / "table1.md").read_text())
    return 0


def cmd_bench_plan(args: argparse.Namespace, method: Method) -> int:
    from ..bench.driver import collect, execute
    from ..bench.plan import Plan
    from ..bench.plan_report import render

    plan = Plan.load(args.plan)
    if args.data:
        plan.data = Path(args.data).resolve()
    if args.weights:
        plan.weights = args.weights if args.weights.startswith("builtin:") else Path(args.weights).resolve()
    runs = Path(args.runs) if args.runs else Path("runs") / plan.name
    results = Path(args.results) if args.results else Path(args.plan).resolve().parent.parent / plan.name / "results"
    failed = [] if args.tables_only else execute(plan, runs, args.only, args.budget_s)
    records = collect(plan, runs, results)
    render(plan, records, results, runs=runs, keep_memory=args.keep_memory)
    print(f"{len(records)} of {len(plan.runs)} runs recorded; tables and figures in {results}")
    for message in failed:
        print(f"failed: {message}")
    return 1 if failed else 0


def add_bench_parsers(sub) -> None:
    b = sub.add_parser("bench", help="measure peak training memory or throughput per method")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    for name, func, options, help_text in (
        ("memory", cmd_bench_memory, MemoryOptions,
         "peak memory of one training step per method (meta accounting on CPU)"),
        ("speed", cmd_bench_speed, SpeedOptions, "training samples/s per method and preload vs bare forward img/s"),
    ):  # fmt: skip
        p = bsub.add_parser(name, help=help_text, description=help_text, formatter_class=FORMATTER)
        add_dataclass_flags(p, options, "what to measure", defaults=options())
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "memory":
            p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                           help="model field for every method that has it, e.g. --set side_depth=9")  # fmt: skip
        p.set_defaults(func=func)
    p = bsub.add_parser(
        "plan",
        help="run a benchmark plan (methods × resolutions × lrs × seeds on one dataset) and render its tables",
        description="Trains what is missing of a plan YAML (see fptplus.bench.plan; resumable, finished runs are "
        "skipped), records each run in RESULTS/runs.json and renders the tables and figures from the records.",
        formatter_class=FORMATTER,
    )
    p.add_argument("plan", help="plan YAML, e.g. benchmarks/plans/isic-uda1.yaml")
    p.add_argument("--runs", help="run folders (default runs/<plan name>)")
    p.add_argument("--results", help="tables and records (default <plan folder>/../<plan name>/results)")
    p.add_argument("--only", nargs="*", help="row names or run folders to run (default: all)")
    p.add_argument("--budget-s", type=float, help="start no further run after this many seconds")
    p.add_argument("--tables-only", action="store_true", help="render from the records, train nothing")
    p.add_argument("--keep-memory", action="store_true",
                   help="keep an existing memory.md even if fptplus's code changed since (its recomputation takes "
                   "minutes; e.g. between the steps of a long benchmark)")  # fmt: skip
    p.add_argument("--data", help="use this dataset instead of the plan's (e.g. a copy on another machine)")
    p.add_argument("--weights", help="use these weights instead of the plan's")
    p.set_defaults(func=cmd_bench_plan)
    r = sub.add_parser("report", help="Table 1/2 and Fig. 1/2 from finished runs", formatter_class=FORMATTER)
    r.add_argument("runs", nargs="+", help="run folders (the --out of `fptplus train`)")
    r.add_argument("--out", required=True, help="folder for table1.md/.csv, table2.*, fig1.png, fig2.png")
    r.add_argument("--attention", default="eager", choices=["eager", "fused"],
                   help="attention implementation of the memory column (the paper's numbers are eager)")  # fmt: skip
    r.add_argument("--gpu-mb", type=float, default=48 * 1024, help="the GPU memory line of Fig. 2 (MB)")
    r.add_argument("--gpu-name", default="48 GB GPU (paper: RTX A6000)", help="its label")
    r.set_defaults(func=cmd_report)
