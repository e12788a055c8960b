"""Epoch time on this machine: FPT+ from the feature store vs FPT+ online vs full fine-tuning, one run each.

    python benchmarks/epoch_time.py --data ../shared/data/covid-cxr/labels.csv \
        --weights ../shared/weights/dinov2_vits14.safetensors --images 200 --img-size 448

A class-balanced subset of `--images` images keeps the CSV's own (patient-grouped) split. Each row trains one
epoch with the paper's protocol (batch 16) and reports the training time of that epoch (evaluation excluded);
the store row also reports the one-off preload time.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from fptplus.config import DataConfig, RunConfig, TrainConfig
from fptplus.data.sources import load_index
from fptplus.methods import get_method
from fptplus.store import PreloadOptions
from fptplus.store import preload as preload_store
from fptplus.trainer.run import train


def subset_csv(src: Path, n: int, out: Path) -> Path:
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    per = max(1, n // len(by_label))
    chosen = [r for group in by_label.values() for r in group[:: max(1, len(group) // per)][:per]]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "label", "split", "group"])
        w.writeheader()
        for r in chosen:
            w.writerow({"path": str((src.parent / r["path"]).resolve()), "label": r["label"], "split": r["split"],
                        "group": r.get("group", "")})  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--backbone", default="vit_small_patch14_dinov2")
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--side-img-size", type=int, default=112)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = subset_csv(Path(args.data), args.images, Path(tmp) / "subset.csv")
        for label, method, preload in (("FPT+ (feature store)", "fpt_plus", True),
                                       ("FPT+ (online)", "fpt_plus", False),
                                       ("full fine-tuning", "full_ft", False)):  # fmt: skip
            m = get_method(method)
            model = dict(backbone=args.backbone, weights=args.weights, img_size=args.img_size)
            if hasattr(m.config_cls, "side_size"):  # FPT/FPT+ configs have a side input
                model["side_img_size"] = args.side_img_size
            cfg = RunConfig(method, m.make_config(**model), DataConfig(data=str(data)),
                            TrainConfig(epochs=1, batch_size=16, preload=preload, num_workers=args.workers,
                                        bootstrap=0))  # fmt: skip
            note = ""
            if preload:  # build the store first, timed on its own; training then finds it complete
                index = load_index(data)
                cfg.model.num_classes = len(index.classes)
                cfg.data.store = str(Path(tmp) / "store")
                t0 = time.perf_counter()
                report = preload_store(
                    index,
                    cfg.model,
                    cfg.data.store,
                    PreloadOptions(batch_size=16, num_workers=args.workers),
                    log=lambda *_: None,
                )
                note = f", one-off preload {time.perf_counter() - t0:.1f} s for {report.processed} images"  # fmt: skip
            out = Path(tmp) / f"{method}-{preload}"
            train(cfg, out, log=lambda *_: None)
            res = json.loads((out / "results.json").read_text())
            print(f"{label:22s} epoch {res['epoch_seconds']:8.1f} s  ({res['params']['percent']:.2f} % params{note})",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
