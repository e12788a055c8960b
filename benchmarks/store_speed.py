"""Feature-store costs: bytes per image, preload throughput vs the bare frozen forward, and data wait in training.

    python benchmarks/store_speed.py --data ../shared/data/covid-cxr/labels.csv --images 96

1. bytes per image of the store vs the authors' format (one fp32 safetensors file per image holding K and V
   of L layers × H heads × k tokens × d).
2. preload images/s (decode → resize → LPM + selection → fp16 → memory-mapped write) vs timm's bare forward
   up to the deepest fused layer on ready tensors, same resolution and batch (ratio = figure of merit).
3. FPT+ training from the store: per epoch, time waiting for the next batch vs time in the training step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from fptplus.backbones.timm_vit import create_vit
from fptplus.data.sources import load_index
from fptplus.data.views import Views
from fptplus.model import FPTConfig, build_fpt
from fptplus.store import FeatureStore, PreloadOptions, preload
from fptplus.store.dataset import StoreDataset
from fptplus.store.plan import store_spec


def bare_forward(cfg: FPTConfig, layers: tuple[int, ...], batch: int, images: int) -> float:
    vit = create_vit(cfg.backbone, cfg.img_size).eval()
    x = torch.randn(batch, 3, *vit.patch_embed.img_size)
    kw = dict(indices=[layers[-1]], stop_early=True, intermediates_only=True, output_fmt="NLC")
    with torch.no_grad():
        vit.forward_intermediates(x, **kw)  # warm-up
        t0 = time.perf_counter()
        for _ in range(images // batch):
            vit.forward_intermediates(x, **kw)
    return (images // batch) * batch / (time.perf_counter() - t0)


def train_wait(store: FeatureStore, cfg: FPTConfig, batch: int, workers: int, epochs: int) -> tuple[float, float]:
    spec = store_spec(cfg, store.fingerprint["side_source_size"])
    model = build_fpt(replace(cfg, num_classes=len(store.classes)), with_lpm=False).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ds = StoreDataset(store, store.usable(), Views(spec.views), train=True)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)  # fmt: skip
    wait = compute = 0.0

    for epoch in range(epochs + 1):  # epoch 0 warms up workers and page cache
        ds.set_epoch(epoch)
        t = time.perf_counter()
        for b in loader:
            t1 = time.perf_counter()
            args, kwargs = model.batch_args(b)  # float K/V, or int8 codes + scales
            logits = model(*args, **kwargs)
            loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(b["label"]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if epoch:
                wait, compute = wait + (t1 - t), compute + (t2 - t1)
            t = t2
    return wait, compute


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--backbone", default="vit_base_patch16_224")
    p.add_argument("--img-size", type=int, default=512)
    p.add_argument("--side-img-size", type=int, default=128)
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--dtype", default="float16", choices=["float16", "float32", "int8"], help="store codec")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = FPTConfig.fpt_plus(backbone=args.backbone, img_size=args.img_size, side_img_size=args.side_img_size)
    index = load_index(args.data)
    index.samples = index.samples[:: max(1, len(index.samples) // args.images)][: args.images]
    spec = store_spec(cfg, dtype=args.dtype)
    f = spec.fields
    n_kv = int(np.prod(f["keys"].shape))
    authors = 2 * n_kv * 4  # their fp32 K and V
    kv = sum(f[n].nbytes for n in ("keys", "values", "keys_scale", "values_scale") if n in f)
    print(f"# {args.backbone} @ {args.img_size} px, {len(spec.layers)} layers, k = {spec.num_selected}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    total = sum(x.nbytes for x in f.values())
    print(f"bytes/image  K+V {args.dtype} {kv:,} ({100 * kv / authors:.1f} % of the authors' "
          f"fp32 {authors:,}); + indices {f['indices'].nbytes:,}; + side source {f['side'].nbytes:,} "
          f"= {total:,} ({100 * total / authors:.1f} %)")  # fmt: skip
    bare = bare_forward(cfg, spec.layers, args.batch_size, args.images)
    with tempfile.TemporaryDirectory() as tmp:
        opts = PreloadOptions(dtype=args.dtype, batch_size=args.batch_size, num_workers=args.workers)
        report = preload(index, cfg, Path(tmp) / "store", opts, rank=0, world_size=1, log=lambda *_: None)
        rate = report.processed / report.run_seconds
        print(f"throughput   bare forward {bare:.2f} img/s; preload {rate:.2f} img/s = {100 * rate / bare:.1f} % "
              f"(batch {args.batch_size}, {args.workers} decode worker(s), {report.processed} images)")  # fmt: skip
        store = FeatureStore(Path(tmp) / "store")
        wait, compute = train_wait(store, cfg, args.batch_size, args.workers, args.epochs)
        print(f"training     {args.epochs} epochs from the store: waiting for data {wait:.2f} s, training steps "
              f"{compute:.2f} s -> data wait = {100 * wait / (wait + compute):.1f} % of epoch time")  # fmt: skip


if __name__ == "__main__":
    main()
