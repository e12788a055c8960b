"""`fptplus predict` throughput vs the bare frozen forward up to the deepest fused layer (one process, one run).

    python benchmarks/predict_speed.py --data ../shared/data/covid-cxr/labels.csv --images 48 --img-size 512

1. trains a throw-away FPT+ run (ViT-B/16, random weights, 1 epoch on 3 images per class and split: only its
   files matter);
2. times `predict` on IMAGES real image files (decode in workers + LPM with selection + side network + softmax,
   the whole public call) and timm's bare forward up to the deepest fused layer on ready tensors of the same
   resolution and batch, round-robin, best of `--rounds`.
The ratio predict / bare is the figure of merit (the decode work is overlapped by the workers; the bare forward
has none). With onnxruntime installed, the run is also exported (`fptplus export`) and the ONNX graph timed on the
same batch of ready tensors (onnxruntime's CPU provider, its default threads). With `--engines`, `predict` is also
timed with `engine=` each installed runtime (openvino, onnxruntime: the frozen pass exported and verified by a
warm-up call that is not timed, into a throw-away cache; the rest of the model in PyTorch, as users run it).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import torch

from fptplus.backbones.timm_vit import create_vit
from fptplus.cli import main as cli
from fptplus.trainer.evaluate import predict


def image_files(data: Path, n: int) -> list[Path]:
    with open(data, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [data.parent / r["path"] for r in rows[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a CSV manifest (path,label[,split])")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--img-size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--engines", action="store_true", help="also time predict with each installed engine")
    args = ap.parse_args()
    args.data = args.data.resolve()
    files = image_files(args.data, args.images)
    backbone = "vit_base_patch16_224"
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "train.csv"
        with open(args.data, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        labels = sorted({r["label"] for r in rows})
        picked = [r for s in ("train", "val", "test") for c in labels
                  for r in [r for r in rows if r.get("split") == s and r["label"] == c][:3]]  # fmt: skip
        with open(sub, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["path", "label", "split"])
            w.writeheader()
            w.writerows({"path": str(args.data.parent / r["path"]), "label": r["label"], "split": r["split"]}
                        for r in picked)  # fmt: skip
        run = Path(tmp) / "run"
        rc = cli(["train", "--data", str(sub), "--out", str(run), "--backbone", backbone, "--weights", "none",
             "--img-size", str(args.img_size), "--epochs", "1", "--batch-size", "8", "--bootstrap", "10"])  # fmt: skip
        if rc != 0:
            raise SystemExit(f"training the throw-away run failed (exit {rc})")
        vit = create_vit(backbone, args.img_size).eval()
        x = torch.randn(args.batch, 3, args.img_size, args.img_size)
        kw = dict(indices=[len(vit.blocks) - 1], stop_early=True, intermediates_only=True, output_fmt="NLC")
        steps = -(-len(files) // args.batch)

        def bare():
            for _ in range(steps):
                vit.forward_intermediates(x, **kw)

        def pred():
            predict(run, files, batch_size=args.batch, num_workers=args.workers)

        runs = [("bare", bare), ("predict", pred)]
        os.environ["FPTPLUS_CACHE"] = str(Path(tmp) / "cache")  # a first use: export + verification
        for engine in ("openvino", "onnxruntime") if args.engines else ():
            if importlib.util.find_spec(engine) is None:
                print(f"{engine} not installed: no predict row with it")
                continue
            t0 = time.perf_counter()
            predict(run, files[: args.batch], batch_size=args.batch, num_workers=args.workers, engine=engine,
                    log=print)  # fmt: skip
            print(f"engine {engine}: first use (export + verification + one batch) {time.perf_counter() - t0:.0f} s")
            timed = lambda e=engine: predict(run, files, batch_size=args.batch, num_workers=args.workers, engine=e)  # noqa: E731
            runs.append((f"predict {engine}", timed))
        try:
            import onnxruntime as ort

            from fptplus.trainer.export import export_onnx

            report = export_onnx(run, Path(tmp) / "model.onnx")
            session = ort.InferenceSession(report.path, providers=["CPUExecutionProvider"])
            feeds = {n: torch.randn(args.batch, *shape).numpy() for n, shape in report.inputs.items()}
            print(f"ONNX parity: max |logit difference| {report.max_abs_logit_diff:.2e}")
            runs.append(("onnxruntime", lambda: [session.run(["logits"], feeds) for _ in range(steps)]))
        except ImportError:
            print("onnxruntime not installed: no ONNX row")
        best = {name: float("inf") for name, _ in runs}
        with torch.no_grad():
            bare()
            for _ in range(args.rounds):
                for name, fn in runs:
                    t0 = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - t0)
    n_bare = steps * args.batch
    bare_ips, pred_ips = n_bare / best["bare"], len(files) / best["predict"]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; {backbone} at {args.img_size} px, "
          f"batch {args.batch}, {args.workers} decode workers, {len(files)} files of {args.data}")  # fmt: skip
    ort_cells = ("", "")
    if "onnxruntime" in best:
        ort_ips = n_bare / best["onnxruntime"]
        ratio = 100 * ort_ips / bare_ips
        ort_cells = (" onnxruntime img/s | onnxruntime / bare |", f" {ort_ips:.3g} | {ratio:.1f} % |")
    print("| bare forward img/s | predict img/s | predict / bare |" + ort_cells[0])
    print("|---|---|---|" + ("---|---|" if ort_cells[1] else ""))
    print(f"| {bare_ips:.3g} | {pred_ips:.3g} | {100 * pred_ips / bare_ips:.1f} % |" + ort_cells[1])
    for name in [n for n in best if n.startswith("predict ")]:
        ips = len(files) / best[name]
        print(f"{name}: {ips:.3g} img/s = {100 * ips / bare_ips:.1f} % of the bare forward, "
              f"{ips / pred_ips:.2f}x predict with torch")  # fmt: skip


if __name__ == "__main__":
    main()
