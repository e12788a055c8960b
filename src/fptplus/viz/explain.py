"""`fptplus explain`: what the frozen model selected and where the prompts looked (Fig. 9), and how much the
side network relies on the fused prompts per layer (Fig. 5).
"""

from __future__ import annotations

import json
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
    if not get_method(cfg.method).uses_store(cfg.model):  # FPT/FPT+ with fused layers
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
    _, run_dir, cfg, model, classes = _fpt_run(run, checkpoint, seed, "online")
    spec, plan = model.spec, model.plan
    layer = plan.lpm_layers[-1] if layer is None else layer
    if layer not in plan.lpm_layers:
        fused = list(plan.lpm_layers)
        raise ConfigError(f"LPM block {layer} is not fused in this run; fused blocks (0-based): {fused}")
    if head is not None and not 0 <= head < spec.num_heads:
        raise ConfigError(f"head must be in 0..{spec.num_heads - 1}, got {head}")
    if prompt is not None and not 0 <= prompt < cfg.model.num_prompts:
        raise ConfigError(f"prompt must be in 0..{cfg.model.num_prompts - 1}, got {prompt}")
    views = Views(view_config(get_method(cfg.method), cfg.model, spec, None, cfg.data.resize))
    hr = views.high_res(load_image_file(image, cfg.data.max_image_pixels or None).image)
    with torch.no_grad():
        out = model.forward_details(views.side_view(views.side_source(hr), train=False)[None],
                                    lpm_x=views.lpm_view(hr)[None], return_attn=True)  # fmt: skip
    j = plan.lpm_layers.index(layer)
    indices = out["features"].indices[0, j].numpy()  # (H, k)
    attn = out["fusion"].attn[0, j].float().numpy()  # (H, P, k)
    multilabel = bool(cfg.data.label_columns)
    logits = out["logits"][0].float()
    probs = (logits.sigmoid() if multilabel else logits.softmax(-1)).numpy()
    base = _to_uint8_rgb(hr)
    n, grid, prefix = spec.num_tokens, spec.grid_size, spec.num_prefix_tokens
    if head is None:
        counts = selection_counts(indices, n, grid, prefix)
        outlined = outline_counts(base, counts.grid, spec.patch_size)
    else:
        counts = selection_counts(indices[head : head + 1], n, grid, prefix)
        outlined = outline_tokens(base, counts.grid > 0, spec.patch_size)
    heat = prompt_attention_map(attn, indices, n, grid, prefix, head, prompt)
    out_dir = Path(out_dir) if out_dir else run_dir / "explain"
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{Path(image).stem}_block{layer}_{'all-heads' if head is None else f'head{head}'}"
    tag += "" if prompt is None else f"_prompt{prompt}"
    paths = {"tokens": out_dir / f"{tag}_tokens.png", "attention": out_dir / f"{tag}_attention.png",
             "summary": out_dir / f"{tag}.png"}  # fmt: skip
    Image.fromarray(outlined).save(paths["tokens"])
    Image.fromarray(heat_overlay(base, heat.grid)).save(paths["attention"])
    info = {
        "image": str(image),
        "layer": layer,
        "head": head,
        "prompt": prompt,
        "prediction": (
            ";".join(c for c, p in zip(classes, probs, strict=True) if p >= 0.5)
            if multilabel
            else classes[int(probs.argmax())]
        ),
        "probabilities": dict(zip(classes, map(float, probs), strict=True)),
        "selected_per_head": int(indices.shape[1]),
        "prefix_tokens_selected": int(counts.prefix),
        "prompt_attention_on_prefix": heat.prefix,
    }
    _summary_figure(base, outlined, heat.grid, info, paths["summary"], int(counts.grid.max()) if head is None else 0)
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
