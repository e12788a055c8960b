"""What trusting a store's bytes costs (issue 30): the shard hashes against the manifest — once per file version, on
first use — and the token-index bounds check on every read, against one training epoch from the same store.

    .venv/bin/python benchmarks/store_checks.py --run runs/isic-uda1/fpt_plus-896-lr0.002/seed-0

`--run` is a finished FPT+ run whose store is measured (its config and data are reused). Rows: hashing the shards
with an empty cache (first use), with the cache filled (every later process), and one epoch of training from the
store with and without the per-read bounds check (same seed, same batches), in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from fptplus.config import RunConfig
from fptplus.files import human_bytes
from fptplus.store import FeatureStore
from fptplus.store.contents import verify_shards
from fptplus.trainer.evaluate import resolve_run
from fptplus.trainer.runfolder import read_run_info, store_location


def epoch_seconds(run_dir: Path, checks: bool) -> float:
    from fptplus.store import reader
    from fptplus.trainer.run import train

    cfg = RunConfig.load(run_dir / "config.yaml")
    cfg.train.epochs, cfg.train.bootstrap = 1, 0
    original = reader.FeatureStore.num_tokens
    if not checks:  # every index passes
        reader.FeatureStore.num_tokens = property(lambda self: 1 << 30)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp) / "run", [cfg.train.seed], log=lambda s: None)
            return json.loads((Path(tmp) / "run" / "results.json").read_text())["epoch_seconds"]
    finally:
        reader.FeatureStore.num_tokens = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "store_checks.json")
    args = ap.parse_args()
    root, run_dir = resolve_run(args.run)
    store_path = store_location(read_run_info(root), root)
    store = FeatureStore(store_path)
    size = sum(f.stat().st_size for f in store_path.glob("shard-*.npy"))
    with tempfile.TemporaryDirectory() as cache:
        os.environ["FPTPLUS_CACHE"] = cache  # an empty cache: the first use
        t0 = time.perf_counter()
        verify_shards(store_path, store.manifest, list(store.fields), lambda s: None)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        verify_shards(store_path, store.manifest, list(store.fields), lambda s: None)
        warm = time.perf_counter() - t0
        with_checks = epoch_seconds(run_dir, True)
        without = epoch_seconds(run_dir, False)
    rows = {"store": str(store_path), "shard_bytes": size, "hash_first_use_s": cold, "hash_cached_s": warm,
            "epoch_s_with_read_checks": with_checks, "epoch_s_without_read_checks": without,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"store {store_path}: {human_bytes(size)} of shards")
    print(
        f"  shard hashes, first use: {cold:.2f} s ({100 * cold / with_checks:.1f} % of an epoch, once per file "
        f"version); every later process: {warm:.3f} s ({100 * warm / with_checks:.2f} %)"
    )
    print(
        f"  one epoch from the store: {with_checks:.2f} s with the per-read bounds check, {without:.2f} s without "
        f"({100 * (with_checks - without) / without:+.1f} %)"
    )


if __name__ == "__main__":
    main()
