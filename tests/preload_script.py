"""`preload` of a tiny dataset in a separate process, for the kill / concurrency / disk-full tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fptplus._testing import CRASH_ENV

from conftest import TINY

SCRIPT = """
import logging, os, sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from fptplus.data.sources import load_index
from fptplus.model import FPTConfig
from fptplus.store import PreloadOptions, preload
if os.environ.get("SKIP_DISK_CHECK"):  # another process fills the disk after the up-front check
    import fptplus.store.writer as writer
    writer.check_disk = lambda *args: None
cfg = FPTConfig(backbone="vit_base_patch16_224", img_size=64, side_img_size=32, side_depth=2, reduction=2,
                num_prompts=4, num_classes=2, backbone_kwargs=TINY_KWARGS, weights=sys.argv[4])
index = load_index(sys.argv[1], seed=0)
wait = None if sys.argv[5] == "none" else float(sys.argv[5])
options = PreloadOptions(num_workers=0, batch_size=2, shard_mb=int(sys.argv[3]) / 2**20, lock_wait=wait)
preload(index, cfg, sys.argv[2], options, rank=0, world_size=1)
"""


def run_preload(
    data: Path,
    out: Path,
    weights: Path,
    shard_bytes: int,
    crash: str | None = None,
    lock_wait: float | None = None,
    stdout=subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
) -> subprocess.Popen:
    """Starts a preload process (the tiny FPT+ of conftest, batch 2, no workers); `crash` sets a kill point."""
    env = {**os.environ, **(env or {}), **({CRASH_ENV: crash} if crash else {})}
    code = SCRIPT.replace("TINY_KWARGS", repr(TINY))
    args = [str(data), str(out), str(shard_bytes), str(weights), "none" if lock_wait is None else str(lock_wait)]
    cmd = [*(prefix or []), sys.executable, "-c", code, *args]
    return subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
