"""Does the frozen model's token selection look at the lesions? IDRiD's 81 lesion-masked fundus photographs.

    .venv/bin/python benchmarks/idrid-dr/lesions.py --repo GIT_DIR \
        --weights ../shared/weights/dinov2_vits14.safetensors --sizes 224 448 672 896 \
        --out benchmarks/idrid-dr/results/lesions

GIT_DIR: a git copy of imsaksham-c/EyeDisease_IDRiD (the repository `../shared/data/idrid-dr` is laid out from; its
"A. Segmentation" part holds 81 photographs with pixel masks of microaneurysms (MA), haemorrhages (HE), hard (EX)
and soft (SE) exudates). Images and masks are read from git, never written to disk.

Each photograph goes through what `fptplus preload --crop foreground` does (the content's bounding box, then
letterboxed to the input size); its masks take the same box and letterbox (area-averaged), then the share of every
14 px patch a lesion covers. The frozen DINOv2 ViT-S/14 runs FPT+'s selection as the store does (the top 6
layers, token ratio 0.2, the paper's mean-attention rule) and keeps, per layer and head, the selected positions.

Reported per input size and lesion type (a "lesion patch" is one with any lesion pixel):
    patch share     lesion patches / all patches: what a random selection would put on lesions
    selected share  selected patch tokens on lesion patches / all selected patch tokens (layers × heads × k)
    enrichment      selected share / patch share (1 = no preference; > 1 = selection prefers lesions), with a
                    95 % bootstrap CI over images; "within the retina" counts only patches mostly on the retina
                    (brighter than crop's 6 % floor) on both sides, so avoiding the black border does not count
    (retina) rows   the retina's share of all patches, and of the selected patch tokens
    lesion recall   the share of lesion pixels inside patches that at least one head of one layer selects
    rows            the enrichment per fused layer (which layers look at lesions)
The counting is `fptplus.bench.lesions` (shared with benchmarks/mini-mias/lesions.py; its JSON calls the retina
"content": content_patch_share, content_selected_share, selected_on_content — the committed lesions.json of
2026-12-03 was written before that rename with retina_* keys).
    prompt attention  (trained runs) the share of the prompts' attention over the selected tokens that falls on
                    lesion patches; ÷ selected share > 1 = the trained prompts favour the lesions among what is kept
"""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fptplus.bench.lesions import measure_all, write
from fptplus.engines import ENGINES
from fptplus.selection import selector_names

SEG = "dataset/A. Segmentation"
TYPES = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates", "SE": "4. Soft Exudates"}
SUFFIX = {"MA": "MA", "HE": "HE", "EX": "EX", "SE": "SE"}
BACKBONE = "vit_small_patch14_dinov2"
Image.MAX_IMAGE_PIXELS = None


def git_bytes(repo: str, path: str) -> bytes | None:
    proc = subprocess.run(["git", "--git-dir", repo, "show", f"HEAD:{path}"], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def images(repo: str, limit: int | None) -> list[tuple[str, str]]:
    """(split folder, image id) of every segmentation photograph, e.g. ("a. Training Set", "IDRiD_01")."""
    cmd = ["git", "--git-dir", repo, "ls-tree", "-r", "--name-only", "HEAD", f"{SEG}/1. Original Images"]
    names = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split("\n")
    found = sorted((Path(n).parent.name, Path(n).stem) for n in names if n.lower().endswith(".jpg"))
    return found[:limit] if limit else found


def load(repo: str, split: str, image_id: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """uint8 (3, h, w) photograph and {type: float (h, w) mask in {0, 1}} of the types it has."""
    img = Image.open(io.BytesIO(git_bytes(repo, f"{SEG}/1. Original Images/{split}/{image_id}.jpg"))).convert("RGB")
    rgb = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    masks = {}
    for t, folder in TYPES.items():
        data = git_bytes(repo, f"{SEG}/2. All Segmentation Groundtruths/{split}/{folder}/{image_id}_{SUFFIX[t]}.tif")
        if data is None:
            continue
        m = np.asarray(Image.open(io.BytesIO(data)).convert("L")) > 0
        if m.shape != tuple(rgb.shape[1:]):
            raise ValueError(f"{image_id} {t}: mask {m.shape} vs image {tuple(rgb.shape[1:])}")
        masks[t] = torch.from_numpy(m)
    return rgb, masks


def photographs(repo: str, limit: int | None):
    """(image id, uint8 (3, h, w) photograph, {type: (h, w) mask}) of every segmentation photograph, read from git."""
    for split, image_id in images(repo, limit):
        rgb, masks = load(repo, split, image_id)
        yield image_id, rgb, masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="git dir of imsaksham-c/EyeDisease_IDRiD")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--sizes", type=int, nargs="*", default=[], help="input sizes, selection by a bare FrozenLPM")
    ap.add_argument("--runs", nargs="*", default=[], help="trained FPT+ runs: selection + the prompts' attention")
    ap.add_argument("--importance", nargs="+", default=["mean"], choices=selector_names(),
                    help="selectors for --sizes (default: the paper's mean rule); a run keeps its own")  # fmt: skip
    ap.add_argument("--engine", default="auto", choices=ENGINES, help="the frozen pass for --sizes (fptplus.engines)")
    ap.add_argument("--seed", type=int, default=0, help="which seed of a multi-seed run")
    ap.add_argument("--limit", type=int, default=None, help="first N photographs only (a quick check)")
    ap.add_argument("--out", required=True, help="folder for lesions.json and lesions.md")
    args = ap.parse_args()
    results = measure_all(BACKBONE, args.sizes, args.runs, args.weights, args.seed,
                          lambda: photographs(args.repo, args.limit),
                          importance=args.importance, engine=args.engine)  # fmt: skip
    command = (f".venv/bin/python benchmarks/idrid-dr/lesions.py --sizes {' '.join(map(str, args.sizes))} "
               f"--importance {' '.join(args.importance)} --engine {args.engine} --runs {' '.join(args.runs)} "
               f"--seed {args.seed}")  # fmt: skip
    print(write(results, args.out, command, TYPES, "retina", BACKBONE))


if __name__ == "__main__":
    main()
