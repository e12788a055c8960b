"""Epoch time of FPT+ from its feature store with torch's thread settings, on an idle and on a busy CPU.

    .venv/bin/python benchmarks/threads.py --store runs/covid-cxr/store-fpt_plus-224 \
        --data ../shared/data/covid-cxr/labels.csv --weights ../shared/weights/dinov2_vits14.safetensors

Each row is one `fptplus train --epochs 1` in a fresh process (batch 16, 1 data-loader worker) and reports its
training time; "busy" runs it while one spinning process per core competes for the CPU (another job on a shared
machine). Settings: fptplus's auto threads (cores of the affinity), 1 thread, torch's default with OpenMP's active
(spinning) wait — what torch does when nothing else is said — and with the passive wait fptplus sets.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {  # name: (--threads, OMP_WAIT_POLICY)
    "auto threads, passive wait (fptplus's default)": (None, "PASSIVE"),
    "1 thread": (1, "PASSIVE"),
    "torch's default threads, active (spinning) wait": (0, "ACTIVE"),
    "torch's default threads, passive wait": (0, "PASSIVE"),
}


def _spin() -> None:
    while True:
        pass


def epoch_seconds(args, threads, policy) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "fptplus.cli", "train", "--data", args.data, "--out", f"{tmp}/run", "--store",
               args.store, "--backbone", "vit_small_patch14_dinov2", "--weights", args.weights, "--img-size",
               str(args.img_size), "--epochs", "1", "--num-workers", "1", "--bootstrap", "0", "-q"]  # fmt: skip
        if threads is not None:
            cmd += ["--threads", str(threads)]
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=3600)
        return json.loads(Path(f"{tmp}/run/results.json").read_text())["epoch_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "threads.json")
    args = ap.parse_args()
    rows = []
    for load in ("idle", "busy"):
        spinners = [mp.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 1)] if load == "busy" else []
        for p in spinners:
            p.start()
        time.sleep(1)
        for name, (threads, policy) in SETTINGS.items():
            s = epoch_seconds(args, threads, policy)
            rows.append({"cpu": load, "setting": name, "epoch_seconds": s})
            print(f"{load:5s} {name:50s} {s:8.1f} s", flush=True)
        for p in spinners:
            p.terminate()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch threads default {os.cpu_count()}"
    args.out.write_text(json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
