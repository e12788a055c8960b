"""CPU time of the command line before it does anything: `--help` and refused flags, in fresh processes.

    .venv/bin/python benchmarks/cli_startup.py                               # this checkout
    .venv/bin/python benchmarks/cli_startup.py --src /tmp/old-checkout/src   # another version, for the ratio

Each case is `python -c "from fptplus.cli import main; main(ARGS)"` in a fresh interpreter (3 repeats, the median);
it reports the process's CPU seconds (user + system, which a busy machine inflates far less than wall time), wall
seconds, and which heavy libraries the case imported. A bare `python -c pass` is the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "timm", "peft", "torchvision", "numpy", "PIL", "sklearn", "accelerate")
CASES = {
    "python -c pass (the floor)": None,
    "fptplus --help": ["--help"],
    "fptplus train --help": ["train", "--help"],
    "fptplus preload --help": ["preload", "--help"],
    "fptplus train --lr 1e-3x": ["train", "--lr", "1e-3x"],
    "fptplus train ... --token-ratio 2": [
        "train",
        "--data",
        "d",
        "--out",
        "o",
        "--weights",
        "none",
        "--token-ratio",
        "2",
    ],
    "fptplus train --data no/such/folder ...": ["train", "--data", "no/such/folder", "--out", "o", "--weights", "none"],
}
PROBE = """
import json, sys
argv = json.loads(sys.argv[1])
code = 0
if argv is not None:
    from fptplus.cli import main
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
heavy = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
print("@@" + json.dumps({"heavy": heavy, "code": code}), file=sys.stderr)
"""


def measure(argv: list[str] | None, src: str | None) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if src:
        env["PYTHONPATH"] = src
    runs = []
    for _ in range(3):
        start = os.times()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
                              capture_output=True, text=True, env=env)  # fmt: skip
        wall = time.perf_counter() - t0
        end = os.times()
        report = json.loads(next(x[2:] for x in reversed(proc.stderr.splitlines()) if x.startswith("@@")))
        child_cpu = (end.children_user - start.children_user) + (end.children_system - start.children_system)
        runs.append({**report, "wall": wall, "cpu": child_cpu})  # the whole process, exit included
    return {"cpu": statistics.median(r["cpu"] for r in runs), "wall": statistics.median(r["wall"] for r in runs),
            "heavy": runs[-1]["heavy"], "code": runs[-1]["code"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", help="a checkout's src folder to measure instead of the installed package")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; src: {args.src or 'installed'}")  # fmt: skip
    print("| case | CPU s | wall s | exit | heavy libraries imported |\n|---|---|---|---|---|")
    for name, argv in CASES.items():
        r = measure(argv, args.src)
        print(f"| `{name}` | {r['cpu']:.2f} | {r['wall']:.2f} | {r['code']} | {', '.join(r['heavy']) or '—'} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
