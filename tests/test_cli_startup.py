"""The command line answers `--help`, argument errors and config errors without loading torch, timm or peft
(issue 32: `fptplus train --help` took 6.6 s of CPU). Each case runs in a fresh interpreter that records which
heavy modules were imported and how much CPU the process used."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "peft", "torchvision", "numpy", "PIL", "sklearn", "scipy", "accelerate")

PROBE = f"""
import json, resource, sys
from fptplus.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
cpu = resource.getrusage(resource.RUSAGE_SELF)
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print("@@" + json.dumps({{"code": code, "heavy": heavy, "cpu": cpu.ru_utime + cpu.ru_stime}}), file=sys.stderr)
"""


def _run(*args: str) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=120)
    lines = proc.stderr.splitlines()
    report = json.loads(next(line[2:] for line in reversed(lines) if line.startswith("@@")))
    return report, proc.stdout + "\n".join(line for line in lines if not line.startswith("@@"))


def test_import_of_the_package_and_cli_loads_no_heavy_module():
    code = f"import sys, fptplus, fptplus.cli, fptplus.config; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "args, code, says",
    [
        (["--help"], 0, "usage: fptplus"),
        (["train", "--help"], 0, "--lr"),
        (["train", "--method", "lora", "--help"], 0, "--lora-r"),
        (["preload", "--help"], 0, "--store-ratio"),
        (["tune", "--help"], 0, "usage: fptplus tune"),
        (["bench", "plan", "--help"], 0, "usage: fptplus bench plan"),
        (["audit", "--help"], 0, "usage: fptplus audit"),
        (["app", "--help"], 0, "usage: fptplus app"),
        (["train", "--lr", "1e-3x"], 2, "--lr"),
        (["train", "--method", "nope"], 2, "unknown method 'nope'"),
        (["train", "--data", "x", "--out", "y", "--weights", "none", "--resize", "crop"], 2, "--resize"),
        (["train", "--data", "x", "--out", "y", "--weights", "none", "--token-ratio", "2"], 2, "token_ratio"),
        (["train", "--data", "no/such/folder", "--out", "y", "--weights", "none"], 2, "--data no/such/folder"),
        (["train", "--method", "lora", "--data", "no/such", "--out", "y", "--weights", "none"], 2, "--data no/such"),
        (["preload", "--data", "no/such/folder", "--out", "y", "--weights", "none"], 2, "--data no/such/folder"),
        (["tune", "--data", "no/such/folder", "--out", "y", "--weights", "none"], 2, "--data no/such/folder"),
    ],
)
def test_help_and_argument_errors_answer_without_torch(args, code, says):
    report, output = _run(*args)
    assert report["code"] == code, output
    assert says in output
    assert report["heavy"] == [], f"{args} imported {report['heavy']}"
    # The budget is the "< 1 s of CPU"; without torch the interpreter plus argparse use ~0.2 s here.
    assert report["cpu"] < 1.0, f"{args} used {report['cpu']:.2f} s of CPU"
