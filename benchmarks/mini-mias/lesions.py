"""Does the frozen model's token selection look at the lesions? mini-MIAS's lesion circles (issue 31, item 5).

    .venv/bin/python benchmarks/mini-mias/lesions.py --data data/mini-mias/labels.csv \
        --weights ../shared/weights/dinov2_vits14.safetensors --sizes 224 448 672 1022 \
        --runs runs/mini-mias/fpt_plus-448-lr0.002 ... --out benchmarks/mini-mias/results/lesions

The abnormal mammograms of mini-MIAS whose lesion has a centre and radius in `labels.csv` (`lesions`: "x y r" per
lesion, in pixels of the 1024 × 1024 image, origin bottom-left; a calcification cluster's circle encloses the
cluster) get a mask: the disc of every lesion. Lesion types are MIAS's abnormality classes (CALC calcification,
CIRC circumscribed mass, SPIC spiculated mass, MISC ill-defined mass, ARCH architectural distortion, ASYM
asymmetry) and ALL (every lesion of the image). The counting — crop and letterbox as `--crop foreground`, lesion
patches, enrichment of the selection within the breast, per fused layer, recall, the trained prompts' attention — is
`fptplus.bench.lesions` (the same as benchmarks/idrid-dr/lesions.py). The images are read from the local layout
(research-use licence: never committed); only the counts are written.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from fptplus.bench.lesions import measure_all, write
from fptplus.data.decode import load_image_file
from fptplus.engines import ENGINES
from fptplus.selection import selector_names

BACKBONE = "vit_small_patch14_dinov2"
TYPES = ["ALL", "CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM"]


def circles(text: str) -> list[tuple[float, float, float]]:
    """`x y r;x y r` -> [(x, y, r)] (bottom-left origin, pixels)."""
    return [tuple(float(v) for v in part.split()) for part in text.split(";") if part.strip()]  # type: ignore[misc]


def disc_mask(h: int, w: int, lesions: list[tuple[float, float, float]]) -> torch.Tensor:
    """(h, w) float mask: 1 inside any circle. MIAS's y counts from the bottom row."""
    rows = torch.arange(h, dtype=torch.float32)[:, None]
    cols = torch.arange(w, dtype=torch.float32)[None, :]
    mask = torch.zeros(h, w, dtype=torch.bool)
    for x, y, r in lesions:
        mask |= (cols - x) ** 2 + (rows - (h - 1 - y)) ** 2 <= r**2
    return mask.float()


def mammograms(csv_path: Path, limit: int | None):
    """(name, uint8 (3, h, w), {type: (h, w) mask}) of every abnormal image with lesion circles."""
    with open(csv_path, encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] == "abnormal" and r["lesions"].strip()]
    for r in rows[:limit]:
        img = load_image_file(csv_path.parent / r["path"]).image
        if img.dtype != torch.uint8:
            img = (img * 255).round().to(torch.uint8)
        h, w = img.shape[-2:]
        mask = disc_mask(h, w, circles(r["lesions"]))
        yield Path(r["path"]).stem, img, {"ALL": mask, r["abnormality"]: mask}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="data/mini-mias/labels.csv")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--sizes", type=int, nargs="*", default=[], help="input sizes, selection by the frozen ViT alone")
    ap.add_argument("--runs", nargs="*", default=[], help="trained FPT+ runs: selection + the prompts' attention")
    ap.add_argument("--importance", nargs="+", default=["mean"], choices=selector_names(),
                    help="selectors for --sizes (default: the paper's mean rule); a run keeps its own")  # fmt: skip
    ap.add_argument("--engine", default="auto", choices=ENGINES, help="the frozen pass for --sizes (fptplus.engines)")
    ap.add_argument("--seed", type=int, default=0, help="which seed of a multi-seed run")
    ap.add_argument("--limit", type=int, default=None, help="first N images only (a quick check)")
    ap.add_argument("--out", required=True, help="folder for lesions.json and lesions.md")
    args = ap.parse_args()
    results = measure_all(BACKBONE, args.sizes, args.runs, args.weights, args.seed,
                          lambda: mammograms(Path(args.data), args.limit),
                          importance=args.importance, engine=args.engine)  # fmt: skip
    command = (f".venv/bin/python benchmarks/mini-mias/lesions.py --sizes {' '.join(map(str, args.sizes))} "
               f"--importance {' '.join(args.importance)} --engine {args.engine} --runs {' '.join(args.runs)} "
               f"--seed {args.seed}")  # fmt: skip
    print(write(results, args.out, command, TYPES, "breast", BACKBONE, " Lesions: MIAS's circles."))


if __name__ == "__main__":
    main()
