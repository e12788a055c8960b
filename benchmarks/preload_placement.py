"""Where a CPU preload decodes its images: beside the pass in a worker, or between batches with the pass on every
core — and what `auto` threads choose (`fptplus.threads.place_decoding`, from the first two batches' timings).

    .venv/bin/python benchmarks/preload_placement.py \
        --data data/idrid-dr/labels.csv --size 224 --images 96 --batch 16 \
        --data data/idrid-dr/labels.csv --size 672 --images 48 --batch 16 \
        --data data/mini-mias/labels.csv --size 1022 --images 20 --batch 4 \
        --out benchmarks/results/preload_placement.json

For each dataset (the first `--images` rows of its CSV, batches of `--batch`, `--crop foreground`, DINOv2
ViT-S/14 weights, the engine `auto` picks) three preloads run, each in a fresh process into a fresh store:
  workers   --threads (cores − 1) --num-workers 1   what `train` did on a CPU before this benchmark (auto threads
                                                     left a core to each decode worker)
  here      --threads cores --num-workers 0         decoding between batches, the pass on every core
  auto      --num-workers 1                         the placement measured on the first two batches
Each reports the seconds of its decode → pass → write loop (`PreloadReport.run_seconds`: model building and
hashing outside it; OpenVINO's compile per batch size inside it, again after `auto` changes the threads) and the
line `auto` logged. Ratios are within one dataset, measured back to back; the load average before each is recorded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys
from fptplus.config import build_dataclass
from fptplus.data.sources import load_index
from fptplus.methods import get_method
from fptplus.store import PreloadOptions, preload
args = json.loads(sys.argv[1])
m = get_method("fpt_plus")
cfg = build_dataclass(m.config_cls, {"backbone": "vit_small_patch14_dinov2", "weights": args["weights"],
                      "img_size": args["size"], "num_classes": 2}, "model", m.make_config)
options = PreloadOptions(num_workers=args["workers"], threads=args["threads"], resize="foreground",
                         batch_size=args["batch"])
lines = []
report = preload(load_index(args["data"], seed=0), cfg, args["out"], options, log=lines.append)
print(json.dumps({"run_seconds": report.run_seconds, "processed": report.processed,
                  "said": [s for s in lines if s.startswith(("preload threads", "engine:"))]}))
"""


def subset(csv_path: Path, n: int, tmp: Path) -> Path:
    """The first `n` rows of a manifest, half of each of two classes (the first of each), paths made absolute,
    split and group columns dropped (preloading ignores the split; an automatic one needs 3 groups per class)."""
    with open(csv_path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    labels = sorted({r["label"] for r in rows})[:2]
    rows = [r for lab in labels for r in [r for r in rows if r["label"] == lab][: n // 2]]
    out = tmp / f"{csv_path.parent.name}.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["path", "label"])
        w.writeheader()
        for r in rows:
            w.writerow({"path": str((csv_path.parent / r["path"]).resolve()), "label": r["label"]})
    return out


def run(data: Path, size: int, batch: int, weights: str, workers: int, threads: int | None, out: Path) -> dict:
    args = {"data": str(data), "size": size, "batch": batch, "weights": weights, "workers": workers,
            "threads": threads, "out": str(out)}  # fmt: skip
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "wall_seconds": time.perf_counter() - t0, "load_before": load}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True, type=Path, help="a labels.csv (repeatable)")
    p.add_argument("--size", action="append", required=True, type=int, help="its resolution (one per --data)")
    p.add_argument("--images", action="append", required=True, type=int, help="its image count (one per --data)")
    p.add_argument("--batch", action="append", type=int, help="its preload batch (one per --data; default 16)")
    p.add_argument("--weights", default="../shared/weights/dinov2_vits14.safetensors")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    record = lambda rows: {"machine": f"{platform.processor() or platform.machine()}, {cores} cores",  # noqa: E731
                           "rows": rows, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}  # fmt: skip
    rows = []
    batches = args.batch or [16] * len(args.data)
    for data, size, n, batch in zip(args.data, args.size, args.images, batches, strict=True):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = subset(data, n, Path(tmp))
            row = {"data": str(data), "size": size, "images": n, "batch": batch}
            for name, workers, threads in (("workers", 1, max(1, cores - 1)), ("here", 0, cores), ("auto", 1, None)):
                row[name] = run(manifest, size, batch, args.weights, workers, threads, Path(tmp) / name)
                print(
                    f"{data.parent.name} {size} px, {name}: {row[name]['run_seconds']:.1f} s "
                    f"({n / row[name]['run_seconds']:.2f} img/s) {row[name]['said']}",
                    flush=True,
                )
            for name in ("here", "auto"):
                row[f"{name}_speedup"] = row["workers"]["run_seconds"] / row[name]["run_seconds"]
            rows.append(row)
            if args.out:  # after each dataset: a later failure keeps the rows measured
                args.out.write_text(json.dumps(record(rows), indent=1))
    for r in rows:
        print(
            f"{Path(r['data']).parent.name} {r['size']} px: here {r['here_speedup']:.2f}×, auto "
            f"{r['auto_speedup']:.2f}× the worker placement"
        )


if __name__ == "__main__":
    main()
