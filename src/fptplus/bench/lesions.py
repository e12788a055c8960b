"""Does the token selection look at the lesions? The share of the selected tokens (and of the prompts' attention)
that falls on annotated lesions, against the lesions' share of the image (issue 31).

For any dataset with lesion masks in the frame of the original image (pixel masks, or circles drawn into masks):
the image goes through what `fptplus preload --crop foreground` does (the content's bounding box, letterboxed to
the input size), its masks through the same box and letterbox (area-averaged), then every patch gets the share of
it a lesion covers. A selection (a trained FPT/FPT+ run, or the frozen ViT alone with FPT+'s defaults) gives the
selected token positions per fused layer and head.

Per image and lesion type (a "lesion patch" is one with any lesion pixel):
    patch_share       lesion patches / all patches: what a random selection puts on lesions
    selected_share    selected patch tokens on lesion patches / all selected patch tokens (layers × heads × k)
    content_*         the same counting only patches mostly on the content (the retina, the breast: brighter than
                      the crop's floor) on both sides, so avoiding the black border does not count as liking lesions
    per_layer         selected_share per fused layer
    recall            the share of lesion area inside patches that at least one head of one layer selects
    attention_share   (trained runs) the share of the prompts' attention over the selected tokens on lesion patches
Enrichment = mean selected share / mean patch share over images (1 = no preference), `bootstrap_ratio` its CI.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.crop import FLOOR, foreground_box
from ..data.views import _letterbox


def patch_cover(mask: torch.Tensor, box: tuple[int, int, int, int], size: int, patch: int) -> torch.Tensor:
    """(h, w) mask in [0, 1] of the original frame -> (g, g) share of each patch a lesion covers, after the crop box
    (top, left, bottom, right) and the letterbox to `size` px that the image gets."""
    top, left, bottom, right = box
    cut = mask[top:bottom, left:right].float()[None]  # (1, h, w)
    h, w = cut.shape[-2:]
    scale = min(size / h, size / w)
    inner = (max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale))))
    small = F.adaptive_avg_pool2d(cut[None], inner)[0]  # area average first: a 4288 px mask, not resampled
    boxed = _letterbox(small, (size, size))  # (1, size, size), zeros around
    return F.avg_pool2d(boxed[None], patch)[0, 0]  # (g, g)


def content_patches(hr: torch.Tensor, patch: int, floor: float = FLOOR) -> torch.Tensor:
    """uint8 (3, S, S) model input -> (g·g,) bool: the patches mostly brighter than the crop's floor."""
    bright = (hr.amax(dim=0).float() / 255 > floor).float()[None, None]
    return F.avg_pool2d(bright, patch).flatten() > 0.5


def image_row(name: str, indices: torch.Tensor, prefix: int, content: torch.Tensor,
              covers: dict[str, torch.Tensor], attn: torch.Tensor | None = None) -> dict[str, Any]:  # fmt: skip
    """One image's shares.

    indices: (L, H, k) selected token indices (prefix tokens first, so patch p is index prefix + p);
    content: (N,) bool patches on the content; covers: {type: (N,) lesion share of each patch};
    attn: (L, H, P, k) each prompt's attention over the k selected tokens, or None.
    """
    patches = indices - prefix  # (L, H, k); < 0 = a prefix token (CLS, registers)
    on_patch = patches >= 0
    flat = patches.clamp(min=0)
    union = torch.zeros(content.numel(), dtype=torch.bool)
    union[flat[on_patch]] = True
    on_content = content[flat] & on_patch  # (L, H, k)
    row: dict[str, Any] = {"image": name, "prefix_share": float((~on_patch).float().mean()),
                           "content_patch_share": float(content.float().mean()),
                           "selected_on_content": float(on_content.sum() / on_patch.sum().clamp(min=1))}  # fmt: skip
    for kind, cover in covers.items():
        lesion = cover > 0
        if not lesion.any():
            continue
        chosen = lesion[flat] & on_patch  # (L, H, k)
        per_layer = chosen.float().sum(dim=(1, 2)) / on_patch.float().sum(dim=(1, 2)).clamp(min=1)  # (L,)
        row[kind] = {
            "patch_share": float(lesion.float().mean()),
            "selected_share": float(chosen.sum() / on_patch.sum().clamp(min=1)),
            "content_patch_share": float((lesion & content).sum() / content.sum().clamp(min=1)),
            "content_selected_share": float((chosen & on_content).sum() / on_content.sum().clamp(min=1)),
            "per_layer": per_layer.tolist(),
            "recall": float(cover[union].sum() / cover.sum()),
        }
        if attn is not None:
            row[kind]["attention_share"] = float((attn * chosen[:, :, None, :]).sum() / attn.sum())
    return row


class Selection:
    """The selection at one input size: a trained FPT/FPT+ run (its checkpoint, views and the prompts' attention,
    through `fptplus.viz.explain.Explainer`) or, without a run, the frozen ViT alone with FPT+'s defaults (top 6
    layers, token ratio 0.2, the selector `importance`: the paper's mean-attention rule unless another registered
    one is named) on the `--crop foreground` letterbox, its pass run by `engine` (`fptplus.engines`: an exported
    graph is verified against PyTorch on the first image, as a preload's first batch is)."""

    def __init__(self, backbone: str, size: int | None = None, run: str | None = None, weights: str | None = None,
                 seed: int = 0, importance: str = "mean", engine: str = "torch",
                 log: Callable[[str], None] = print) -> None:  # fmt: skip
        from ..backbones import create_backbone, lpm_spec
        from ..lpm import FrozenLPM

        if (size is None) == (run is None):
            raise ValueError("give a size (the frozen ViT alone) or a trained run, not both")
        if run is not None:
            from ..viz.explain import Explainer

            self.explainer = Explainer(run, seed=seed)
            self.spec = self.explainer.model.spec
            self.layers = list(self.explainer.layers)
            self.label = f"{self.spec.img_size[0]} (run)"
            self.importance = self.explainer.model.lpm.importance
        else:
            self.explainer = None
            self.spec = lpm_spec(backbone, size)
            vit = create_backbone(backbone, size, weights).eval()
            self.lpm = FrozenLPM(vit, backbone, layers=6, token_ratio=0.2, importance=importance).eval()
            self.layers = list(self.lpm.layers)
            self.label = str(size) if importance == "mean" else f"{size} {importance}"
            self.importance, self.log, self.auto = importance, log, engine == "auto"
            from ..backbones import weights_identity
            from ..engines import make_engine

            self.engine = make_engine(engine, self.lpm, torch.device("cpu"), weights_identity(backbone, weights), {},
                                      log)  # fmt: skip
        self.size = self.spec.img_size[0]

    @torch.no_grad()
    def __call__(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """uint8 (3, h, w) -> model input uint8 (3, S, S), selected token indices (L, H, k), attention (L, H, P, k)."""
        if self.explainer is not None:
            d = self.explainer.forward(rgb)
            return torch.from_numpy(d.base).permute(2, 0, 1), torch.from_numpy(d.indices), torch.from_numpy(d.attn)
        box = foreground_box(rgb)
        hr = _letterbox(rgb[:, box[0] : box[2], box[1] : box[3]], (self.size, self.size))
        mean, std = torch.tensor(self.spec.mean)[:, None, None], torch.tensor(self.spec.std)[:, None, None]
        from ..engines import first_batch_check

        x = ((hr.float() / 255 - mean) / std)[None]  # (1, 3, S, S)
        self.engine = first_batch_check(self.engine, x, self.auto, self.log)
        return hr, self.engine(x).indices[0], None


def measure(sel: Selection, images: Iterable[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]) -> dict[str, Any]:
    """Every (name, uint8 (3, h, w) image, {type: (h, w) mask}) through one selection."""
    patch, prefix = sel.spec.patch_size[0], sel.spec.num_prefix_tokens
    rows = []
    t0 = time.perf_counter()
    for name, rgb, masks in images:
        box = foreground_box(rgb)
        hr, idx, attn = sel(rgb)
        covers = {k: patch_cover(m, box, sel.size, patch).flatten() for k, m in masks.items()}
        rows.append(image_row(name, idx, prefix, content_patches(hr, patch), covers, attn))
    return {"seconds": time.perf_counter() - t0, "rows": rows, "layers": sel.layers}


def bootstrap_ratio(sel: np.ndarray, base: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """mean(sel) / mean(base) over images, with a 95 % percentile bootstrap CI (images resampled, paired)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sel), (n, len(sel)))
    ratios = sel[picks].mean(axis=1) / base[picks].mean(axis=1)
    return float(sel.mean() / base.mean()), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def table(results: dict[str, dict[str, Any]], kinds: Iterable[str], content: str = "content") -> str:
    """Markdown: per selection and lesion type, the shares, the enrichment (all patches; `content` only), the
    recall, the enrichment per fused layer and the prompts' attention."""
    lines = ["| size | lesion | images | patch share % | selected share % | enrichment (95 % CI) | within the "
             f"{content}: enrichment (95 % CI) | lesion recall % | enrichment per fused layer (low → top) | "
             "prompt attention on lesions % (÷ selected share) |", "|---" * 10 + "|"]  # fmt: skip
    for label, res in results.items():
        rows = res["rows"]
        share = 100 * np.mean([r["content_patch_share"] for r in rows])
        on = 100 * np.mean([r["selected_on_content"] for r in rows])
        lines.append(f"| {label} | ({content}) | {len(rows)} | {share:.1f} | {on:.1f} | | | | | |")
        for kind in kinds:
            got = [r[kind] for r in rows if kind in r]
            if not got:
                continue
            base = np.array([x["patch_share"] for x in got])
            sel = np.array([x["selected_share"] for x in got])
            e, lo, hi = bootstrap_ratio(sel, base)
            ce, clo, chi = bootstrap_ratio(np.array([x["content_selected_share"] for x in got]),
                                           np.array([x["content_patch_share"] for x in got]))  # fmt: skip
            per_layer = " ".join(f"{v:.2f}" for v in np.array([x["per_layer"] for x in got]).mean(axis=0) / base.mean())
            attention = ""
            if "attention_share" in got[0]:
                a = np.array([x["attention_share"] for x in got])
                attention = f"{100 * a.mean():.2f} ({a.mean() / sel.mean():.2f})"
            lines.append(f"| {label} | {kind} | {len(got)} | {100 * base.mean():.2f} | {100 * sel.mean():.2f} | "
                         f"{e:.2f} ({lo:.2f}–{hi:.2f}) | {ce:.2f} ({clo:.2f}–{chi:.2f}) | "
                         f"{100 * np.mean([x['recall'] for x in got]):.1f} | {per_layer} | {attention} |")  # fmt: skip
    return "\n".join(lines)


@torch.no_grad()
def measure_all(backbone: str, sizes: Iterable[int], runs: Iterable[str], weights: str | None, seed: int,
                images: Callable[[], Iterable[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]],
                log: Callable[[str], None] = print, importance: Iterable[str] = ("mean",),
                engine: str = "torch") -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every selection — the frozen ViT alone at each size with each selector in `importance`, then each trained
    run (its own selector) — over `images()` (called once per selection, so the images are streamed, never all held).
    {label: measure(...) + {"run": folder or None, "importance": selector}}. Gradients stay as the caller had them."""
    results: dict[str, dict[str, Any]] = {}
    bare = [(s, None, name) for s in sizes for name in importance]
    for size, run, name in [*bare, *((None, r, "mean") for r in runs)]:
        sel = Selection(backbone, size, run, weights, seed, name, engine, log)
        ran = sel.engine.name if run is None else "torch"  # a trained run's pass: the Explainer's PyTorch
        res = results[sel.label] = {**measure(sel, images()), "run": run, "importance": sel.importance,
                                    "engine": ran}  # fmt: skip
        log(f"{sel.label} px: {len(res['rows'])} images in {res['seconds']:.0f} s ({ran})")
    return results


def write(results: dict[str, dict[str, Any]], out: str | Path, command: str, kinds: Iterable[str], content: str,
          backbone: str, note: str = "") -> str:  # fmt: skip
    """OUT/lesions.json (every image's row) and OUT/lesions.md (the command, the machine, `table`); returns the md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lesions.json").write_text(json.dumps(results, indent=1))
    first = next(iter(results.values()))
    head = (f"Command: `{command}`; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads. Selection: {backbone}, fused layers {first['layers']}, token ratio "
            f"0.2; selector: the paper's mean-attention rule unless the size names another.{note}\n\n")  # fmt: skip
    text = head + table(results, kinds, content) + "\n"
    (out / "lesions.md").write_text(text)
    return text
