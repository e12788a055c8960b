"""`fptplus explain`: what the frozen model selected and where the prompts looked (Fig. 9), and how much the
side network relies on the fused prompts per layer (Fig. 5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.decode import load_image_file
from ..data.views import Views
from ..errors import ConfigError
from ..methods import get_method
from ..trainer.evaluate import load_trained, resolve_run
from ..trainer.inputs import view_config
from .tokens import heat_overlay, outline_counts, outline_tokens, prompt_attention_map, selection_counts


def fpt_run_dirs(run: str | Path, seed: int | None) -> tuple[Path, Path]:
    """(root, seed folder) of an FPT/FPT+ run with fused layers; anything else is refused."""
    from ..config import RunConfig

    root, run_dir = resolve_run(run, seed)
    cfg = RunConfig.load(run_dir / "config.yaml")
    if not get_method(cfg.method).fuses_lpm(cfg.model):  # FPT/FPT+ with fused layers
        raise ConfigError(
            f"{run_dir} is a {cfg.method} run{' without fused layers' if cfg.method.startswith('fpt') else ''}: "
            "explain shows FPT/FPT+'s selected tokens and prompt attention, which only FPT/FPT+ runs with fused "
            "LPM layers have"
        )
    return root, run_dir


def _fpt_run(run: str | Path, checkpoint: str, seed: int | None, source: str):
    root, run_dir = fpt_run_dirs(run, seed)
    cfg, model, classes = load_trained(run_dir, checkpoint, source)
    return root, run_dir, cfg, model, classes


def _to_uint8_rgb(hr: torch.Tensor) -> np.ndarray:
    img = hr if hr.dtype == torch.uint8 else (hr.clamp(0, 1) * 255).round().to(torch.uint8)
    return img.permute(1, 2, 0).numpy()  # (H, W, 3)


@dataclass
class Details:
    """One image's forward pass, kept so that other layers / heads / prompts render without another pass."""

    base: np.ndarray  # (H, W, 3) uint8: the LPM's high-resolution view
    probs: np.ndarray  # (C,)
    indices: np.ndarray | None  # (L, H_heads, k) selected token indices per fused layer (FPT/FPT+), else None
    attn: np.ndarray | None  # (L, H_heads, P, k) prompt attention over them


@dataclass
class Rendering:
    info: dict[str, Any]
    outlined: np.ndarray  # (H, W, 3) uint8: the selected tokens outlined
    heat: np.ndarray  # (H, W, 3) uint8: the prompts' attention over the image
    heat_grid: np.ndarray  # (gh, gw) attention share per patch
    most_heads: int


class Explainer:
    """A trained run loaded once: its probabilities for any image and, for FPT/FPT+ runs with fused layers, the
    selected tokens and the prompts' attention at any fused layer, head and prompt (`fptplus explain`, the app)."""

    def __init__(self, run: str | Path, checkpoint: str = "best", seed: int | None = None, require_fpt: bool = True):
        self.root, self.run_dir = fpt_run_dirs(run, seed) if require_fpt else resolve_run(run, seed)
        self.cfg, self.model, self.classes = load_trained(self.run_dir, checkpoint, "online")
        self.method = get_method(self.cfg.method)
        self.fpt = self.method.fuses_lpm(self.cfg.model)
        self.multilabel = bool(self.cfg.data.label_columns)
        self.views = Views(view_config(self.method, self.cfg.model, self.model.spec, None, self.cfg.data.geometry))

    @property
    def layers(self) -> list[int]:
        return list(self.model.plan.lpm_layers) if self.fpt else []

    def check(self, layer: int | None, head: int | None, prompt: int | None) -> int:
        """The layer to show (default: the top fused one); bad selectors are refused by name."""
        spec = self.model.spec
        layer = self.layers[-1] if layer is None else layer
        if layer not in self.layers:
            raise ConfigError(f"LPM block {layer} is not fused in this run; fused blocks (0-based): {self.layers}")
        if head is not None and not 0 <= head < spec.num_heads:
            raise ConfigError(f"head must be in 0..{spec.num_heads - 1}, got {head}")
        if prompt is not None and not 0 <= prompt < self.cfg.model.num_prompts:
            raise ConfigError(f"prompt must be in 0..{self.cfg.model.num_prompts - 1}, got {prompt}")
        return layer

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> Details:
        """One decoded image (3, H, W) -> its probabilities and (FPT/FPT+) selections and attention."""
        hr = self.views.high_res(image)
        if self.fpt:
            out = self.model.forward_details(self.views.side_view(self.views.side_source(hr), train=False)[None],
                                             lpm_x=self.views.lpm_view(hr)[None], return_attn=True)  # fmt: skip
            logits = out["logits"][0].float()
            indices = out["features"].indices[0].numpy()  # (L, H, k)
            attn = out["fusion"].attn[0].float().numpy()  # (L, H, P, k)
        else:
            item = self.method.inputs.eval_item(self.views, hr)
            args, kwargs = self.model.batch_args({k: v[None] for k, v in item.items()})
            logits, indices, attn = self.model(*args, **kwargs)[0].float(), None, None
        probs = (logits.sigmoid() if self.multilabel else logits.softmax(-1)).numpy()
        return Details(_to_uint8_rgb(hr), probs, indices, attn)

    def prediction(self, probs: np.ndarray) -> str:
        if self.multilabel:
            return ";".join(c for c, p in zip(self.classes, probs, strict=True) if p >= 0.5)
        return self.classes[int(probs.argmax())]

    def render(self, d: Details, layer: int | None = None, head: int | None = None,
               prompt: int | None = None) -> Rendering:  # fmt: skip
        """The outlines and heat map of one fused layer, one head (None: all) and one prompt (None: their mean)."""
        layer = self.check(layer, head, prompt)
        spec = self.model.spec
        j = self.layers.index(layer)
        indices, attn = d.indices[j], d.attn[j]  # (H, k), (H, P, k)
        n, grid, prefix = spec.num_tokens, spec.grid_size, spec.num_prefix_tokens
        if head is None:
            counts = selection_counts(indices, n, grid, prefix)
            outlined = outline_counts(d.base, counts.grid, spec.patch_size)
        else:
            counts = selection_counts(indices[head : head + 1], n, grid, prefix)
            outlined = outline_tokens(d.base, counts.grid > 0, spec.patch_size)
        heat = prompt_attention_map(attn, indices, n, grid, prefix, head, prompt)
        info = {
            "layer": layer,
            "head": head,
            "prompt": prompt,
            "prediction": self.prediction(d.probs),
            "probabilities": dict(zip(self.classes, map(float, d.probs), strict=True)),
            "selected_per_head": int(indices.shape[1]),
            "prefix_tokens_selected": int(counts.prefix),
            "prompt_attention_on_prefix": heat.prefix,
        }
        most = int(counts.grid.max()) if head is None else 0
        return Rendering(info, outlined, heat_overlay(d.base, heat.grid), heat.grid, most)


def explain_image(
    run: str | Path,
    image: str | Path,
    layer: int | None = None,
    head: int | None = None,
    prompt: int | None = None,
    out_dir: str | Path | None = None,
    checkpoint: str = "best",
    seed: int | None = None,
) -> dict[str, Any]:
    """Writes the selected-token outlines and the prompt-attention heat map of one image.

    Args:
        run: FPT/FPT+ run folder.
        image: any image the data layer reads.
        layer: LPM block index among the fused layers (default: the top one).
        head: one attention head, or None for all heads (outlines coloured by how many heads chose a patch).
        prompt: one fine-grained prompt, or None for the mean over prompts.
        out_dir: where the PNGs go (default RUN/explain).
    """
    ex = Explainer(run, checkpoint, seed)
    layer = ex.check(layer, head, prompt)
    d = ex.forward(load_image_file(image, ex.cfg.data.max_image_pixels or None).image)
    r = ex.render(d, layer, head, prompt)
    out_dir = Path(out_dir) if out_dir else ex.run_dir / "explain"
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{Path(image).stem}_block{layer}_{'all-heads' if head is None else f'head{head}'}"
    tag += "" if prompt is None else f"_prompt{prompt}"
    paths = {"tokens": out_dir / f"{tag}_tokens.png", "attention": out_dir / f"{tag}_attention.png",
             "summary": out_dir / f"{tag}.png"}  # fmt: skip
    Image.fromarray(r.outlined).save(paths["tokens"])
    Image.fromarray(r.heat).save(paths["attention"])
    info = {"image": str(image), **r.info}
    _summary_figure(d.base, r.outlined, r.heat_grid, info, paths["summary"], r.most_heads)
    (out_dir / f"{tag}.json").write_text(json.dumps(info, indent=1))
    return {**info, "paths": {k: str(v) for k, v in paths.items()}}


def _summary_figure(base, outlined, heat, info, path: Path, most_heads: int) -> None:
    """Input | selected tokens (colour bar: how many heads chose a patch) | prompt attention (colour bar: share)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import PercentFormatter

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.9), dpi=110)
    who = "all heads (colour: how many chose it)" if info["head"] is None else f"head {info['head']}"
    axes[0].imshow(base)
    axes[0].set_title(f"input\nprediction: {info['prediction']} ({100 * max(info['probabilities'].values()):.1f} %)")
    axes[1].imshow(outlined)
    axes[1].set_title(f"selected tokens\nLPM block {info['layer']} (0-based), {who}")
    axes[2].imshow(base)
    h, w = base.shape[:2]
    shown = axes[2].imshow(heat, cmap="inferno", alpha=0.6, extent=(0, w, h, 0), interpolation="nearest")
    bar = fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.02, format=PercentFormatter(1.0, decimals=2))
    bar.set_label("share of the prompts' attention per patch", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if most_heads:  # the outlines' colours (viridis, scaled to the most heads that chose one patch)
        counts = ScalarMappable(Normalize(0, most_heads), cmap="viridis")
        bar = fig.colorbar(counts, ax=axes[1], fraction=0.046, pad=0.02)
        bar.set_label("heads that selected the patch", fontsize=8)
    which = "mean over prompts" if info["prompt"] is None else f"prompt {info['prompt']}"
    axes[2].set_title(
        f"fine-grained prompts' attention ({which})\non the selected tokens; on CLS: "
        f"{100 * info['prompt_attention_on_prefix']:.1f} %"
    )
    for ax in axes:
        ax.axis("off")
        ax.title.set_fontsize(10)
    fig.subplots_adjust(left=0.01, right=0.93, bottom=0.02, top=0.88, wspace=0.16)
    fig.savefig(path)
    plt.close(fig)
