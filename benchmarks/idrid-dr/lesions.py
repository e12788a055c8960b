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
    prompt attention  (trained runs) the share of the prompts' attention over the selected tokens that falls on
                    lesion patches; ÷ selected share > 1 = the trained prompts favour the lesions among what is kept
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fptplus.backbones import create_backbone, lpm_spec
from fptplus.data.crop import foreground_box
from fptplus.data.views import _letterbox
from fptplus.lpm import FrozenLPM

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


def patch_cover(mask: torch.Tensor, box: tuple[int, int, int, int], size: int, patch: int) -> torch.Tensor:
    """(g, g) share of each patch a lesion covers, after the crop and letterbox the image gets."""
    top, left, bottom, right = box
    cut = mask[top:bottom, left:right].float()[None]  # (1, h, w)
    # area-average to a manageable size first (the letterbox's antialiased bilinear resize is close to it)
    h, w = cut.shape[-2:]
    scale = min(size / h, size / w)
    inner = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.adaptive_avg_pool2d(cut[None], inner)[0]
    boxed = _letterbox(small, (size, size))  # (1, size, size), zeros around
    return F.avg_pool2d(boxed[None], patch)[0, 0]  # (g, g)


class Selection:
    """The frozen model's selection at one input size: from a trained FPT+ run (its checkpoint, views and the prompts'
    attention, through `fptplus.viz.explain.Explainer`) or, without a run, a bare FrozenLPM with FPT+'s defaults."""

    def __init__(self, size: int | None, run: str | None, weights: str, seed: int) -> None:
        if run is not None:
            from fptplus.viz.explain import Explainer

            self.explainer = Explainer(run, seed=seed)
            self.spec = self.explainer.model.spec
            self.layers = self.explainer.layers
            self.label = f"{self.spec.img_size[0]} (run)"
        else:
            self.explainer = None
            self.spec = lpm_spec(BACKBONE, size)
            vit = create_backbone(BACKBONE, size, weights).eval()
            self.lpm = FrozenLPM(vit, BACKBONE, layers=6, token_ratio=0.2, importance="mean").eval()
            self.layers = list(self.lpm.layers)
            self.label = str(size)
        self.size = self.spec.img_size[0]

    def __call__(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """uint8 (3, h, w) -> hr uint8 (3, S, S), selected token positions (L, H, k), prompt attention (L, H, P, k)."""
        if self.explainer is not None:
            d = self.explainer.forward(rgb)
            return torch.from_numpy(d.base).permute(2, 0, 1), torch.from_numpy(d.indices), torch.from_numpy(d.attn)
        box = foreground_box(rgb)
        hr = _letterbox(rgb[:, box[0] : box[2], box[1] : box[3]], (self.size, self.size))
        mean, std = torch.tensor(self.spec.mean)[:, None, None], torch.tensor(self.spec.std)[:, None, None]
        return hr, self.lpm(((hr.float() / 255 - mean) / std)[None]).indices[0], None


def analyse(args) -> dict:
    torch.set_grad_enabled(False)
    todo = images(args.repo, args.limit)
    results = {}
    for size, run in [*((s, None) for s in args.sizes), *((None, r) for r in args.runs)]:
        sel = Selection(size, run, args.weights, args.seed)
        spec, g, prefix = sel.spec, sel.spec.grid_size[0], sel.spec.num_prefix_tokens
        rows = []
        t0 = time.perf_counter()
        for split, image_id in todo:
            rgb, masks = load(args.repo, split, image_id)
            box = foreground_box(rgb)
            hr, idx, attn = sel(rgb)
            patches = idx - prefix  # (L, H, k); < 0 = a prefix token (CLS)
            on_patch = patches >= 0
            flat = patches.clamp(min=0)
            union = torch.zeros(g * g, dtype=torch.bool)
            union[flat[on_patch]] = True
            bright = (hr.amax(dim=0).float() / 255 > 0.06).float()[None, None]  # the retina (crop.FLOOR)
            retina = F.avg_pool2d(bright, spec.patch_size[0]).flatten() > 0.5  # (g·g,) patches mostly on the retina
            on_retina = retina[flat] & on_patch  # (L, H, k)
            row = {"image": image_id, "prefix_share": float((~on_patch).float().mean()),
                   "retina_patch_share": float(retina.float().mean()),
                   "selected_on_retina": float(on_retina.sum() / on_patch.sum())}  # fmt: skip
            for t, m in masks.items():
                cover = patch_cover(m, box, sel.size, spec.patch_size[0]).flatten()  # (g·g,)
                lesion = cover > 0
                if not lesion.any():
                    continue
                chosen = lesion[flat] & on_patch  # (L, H, k)
                per_layer = chosen.float().sum(dim=(1, 2)) / on_patch.float().sum(dim=(1, 2))  # (L,)
                row[t] = {
                    "patch_share": float(lesion.float().mean()),
                    "selected_share": float(chosen.sum() / on_patch.sum()),
                    "retina_patch_share": float((lesion & retina).sum() / retina.sum()),
                    "retina_selected_share": float((chosen & on_retina).sum() / on_retina.sum().clamp(min=1)),
                    "per_layer": per_layer.tolist(),
                    "recall": float(cover[union].sum() / cover.sum()),
                }
                if attn is not None:  # (L, H, P, k): each prompt's attention sums to 1 over the k selected tokens
                    row[t]["attention_share"] = float((attn * chosen[:, :, None, :]).sum() / attn.sum())
            rows.append(row)
        seconds = time.perf_counter() - t0
        results[sel.label] = {"seconds": seconds, "rows": rows, "layers": sel.layers, "run": run}
        print(f"{sel.label} px: {len(rows)} images in {seconds:.0f} s", flush=True)
    return results


def bootstrap_ratio(sel: np.ndarray, base: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """mean(sel) / mean(base) over images, with a 95 % percentile bootstrap CI."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sel), (n, len(sel)))
    ratios = sel[picks].mean(axis=1) / base[picks].mean(axis=1)
    return float(sel.mean() / base.mean()), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def table(results: dict) -> str:
    lines = ["| size | lesion | images | patch share % | selected share % | enrichment (95 % CI) | within the retina: "
             "enrichment (95 % CI) | lesion recall % | enrichment per fused layer (low → top) | prompt attention "
             "on lesions % (÷ selected share) |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, res in results.items():
        rows = res["rows"]
        retina = 100 * np.mean([r["retina_patch_share"] for r in rows])
        on_retina = 100 * np.mean([r["selected_on_retina"] for r in rows])
        lines.append(f"| {label} | (retina) | {len(rows)} | {retina:.1f} | {on_retina:.1f} | | | | | |")
        for t in TYPES:
            got = [r[t] for r in rows if t in r]
            if not got:
                continue
            base = np.array([x["patch_share"] for x in got])
            sel = np.array([x["selected_share"] for x in got])
            e, lo, hi = bootstrap_ratio(sel, base)
            re, rlo, rhi = bootstrap_ratio(np.array([x["retina_selected_share"] for x in got]),
                                           np.array([x["retina_patch_share"] for x in got]))  # fmt: skip
            layers = np.array([x["per_layer"] for x in got]).mean(axis=0) / base.mean()
            recall = 100 * np.mean([x["recall"] for x in got])
            per_layer = " ".join(f"{v:.2f}" for v in layers)
            attention = ""
            if "attention_share" in got[0]:
                a = np.array([x["attention_share"] for x in got])
                attention = f"{100 * a.mean():.2f} ({a.mean() / sel.mean():.2f})"
            lines.append(f"| {label} | {t} | {len(got)} | {100 * base.mean():.2f} | {100 * sel.mean():.2f} | "
                         f"{e:.2f} ({lo:.2f}–{hi:.2f}) | {re:.2f} ({rlo:.2f}–{rhi:.2f}) | {recall:.1f} "
                         f"| {per_layer} | {attention} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="git dir of imsaksham-c/EyeDisease_IDRiD")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--sizes", type=int, nargs="*", default=[], help="input sizes, selection by a bare FrozenLPM")
    ap.add_argument("--runs", nargs="*", default=[], help="trained FPT+ runs: selection + the prompts' attention")
    ap.add_argument("--seed", type=int, default=0, help="which seed of a multi-seed run")
    ap.add_argument("--limit", type=int, default=None, help="first N photographs only (a quick check)")
    ap.add_argument("--out", required=True, help="folder for lesions.json and lesions.md")
    args = ap.parse_args()
    results = analyse(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lesions.json").write_text(json.dumps(results, indent=1))
    first = next(iter(results.values()))
    head = (f"Command: `.venv/bin/python benchmarks/idrid-dr/lesions.py --sizes {' '.join(map(str, args.sizes))} "
            f"--runs {' '.join(args.runs)} --seed {args.seed}`; {platform.processor() or platform.machine()}, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads. Selection: {BACKBONE}, fused layers "
            f"{first['layers']}, token ratio 0.2, mean-attention rule.\n\n")  # fmt: skip
    (out / "lesions.md").write_text(head + table(results) + "\n")
    print(head + table(results))


if __name__ == "__main__":
    main()
