"""Do FPT+'s selected tokens and its prompts' attention land on the lesion, at every resolution of the sweep?

For each test melanoma (or every test image with --all): one forward of a trained run (`fptplus.viz.explain.
Explainer`), the top fused layer's selected tokens over all heads and the prompts' attention; a crude lesion mask
(Otsu threshold of the grey high-resolution view: the darker class; dermoscopy lesions are darker than skin, and
dark vignette corners count as "lesion" too); a patch is lesion when at least half its pixels are. Prints, per
run: the lesion's share of the patches (what a random selection would hit), the share of the selected picks on
lesion patches, and the share of the prompts' attention on them.

    .venv/bin/python benchmarks/isic-uda1/selection_on_lesion.py runs/isic-uda1/fpt_plus-224-lr0.002 \
        runs/isic-uda1/fpt_plus-896-lr0.002 --data data/isic-uda1/labels.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from fptplus.data.decode import load_image_file
from fptplus.viz.explain import Explainer
from fptplus.viz.tokens import prompt_attention_map, selection_counts


def otsu_dark(grey: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> bool mask of the darker Otsu class."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return grey <= int(np.argmax(between))


def lesion_patches(base: np.ndarray, grid: tuple[int, int], patch: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 view -> (gh, gw) bool: patches at least half inside the dark mask."""
    grey = base.astype(np.float64).mean(-1).round().astype(np.uint8)
    (gh, gw), (ph, pw) = grid, patch
    mask = otsu_dark(grey)[: gh * ph, : gw * pw]
    return mask.reshape(gh, ph, gw, pw).mean((1, 3)) >= 0.5


def measure(run: str, images: list[Path], seed: int) -> dict[str, float]:
    ex = Explainer(run, seed=seed)
    spec = ex.model.spec
    layer = ex.layers[-1]
    j = ex.layers.index(layer)
    area, picks, attention = [], [], []
    for path in images:
        d = ex.forward(load_image_file(path, ex.cfg.data.max_image_pixels or None).image)
        lesion = lesion_patches(d.base, spec.grid_size, spec.patch_size)
        counts = selection_counts(d.indices[j], spec.num_tokens, spec.grid_size, spec.num_prefix_tokens).grid
        heat = prompt_attention_map(d.attn[j], d.indices[j], spec.num_tokens, spec.grid_size,
                                    spec.num_prefix_tokens, None, None).grid  # fmt: skip
        area.append(lesion.mean())
        picks.append(counts[lesion].sum() / max(counts.sum(), 1))
        attention.append(heat[lesion].sum() / max(heat.sum(), 1e-12))
    return {"images": len(images), "lesion_share": float(np.mean(area)), "picks_on_lesion": float(np.mean(picks)),
            "attention_on_lesion": float(np.mean(attention))}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="FPT+ run folders")
    p.add_argument("--data", required=True, help="labels.csv of the dataset (path, label, split)")
    p.add_argument("--all", action="store_true", help="every test image, not only the melanomas")
    p.add_argument("--seed", type=int, default=0, help="which seed's model of each run")
    args = p.parse_args()
    root = Path(args.data).parent
    with open(args.data, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and (args.all or r["label"] == "malignant")]
    images = [root / r["path"] for r in rows]
    print("| run | images | lesion share of the patches | selected picks on lesion | prompt attention on lesion |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        m = measure(run, images, args.seed)
        print(f"| {run} | {m['images']} | {100 * m['lesion_share']:.1f} % | {100 * m['picks_on_lesion']:.1f} % | "
              f"{100 * m['attention_on_lesion']:.1f} % |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
