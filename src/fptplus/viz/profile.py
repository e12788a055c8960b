"""Fig. 5: the average attention that side tokens pay to the fused prompts at each fused layer, over a split.

Hooks on the side blocks' `attn.q_norm` / `attn.k_norm` see the queries and keys of the N side tokens + P
prompts (timm keeps its fused attention); the probe recomputes the softmax rows of the side tokens and adds up
the mass on the P prompt keys. Per layer: the mean over side tokens (CLS included), heads and images.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .explain import _fpt_run, fpt_run_dirs


class PromptAttentionProbe:
    """Accumulates, per side block, the attention mass side tokens give to the appended prompts."""

    def __init__(self, side_blocks: list[nn.Module], num_prompts: int) -> None:
        self.num_prompts = num_prompts
        self.sums = [0.0] * len(side_blocks)
        self.counts = [0] * len(side_blocks)
        self._qk: dict[int, dict[str, Tensor]] = {}
        self._handles = []
        for i, block in enumerate(side_blocks):
            self._handles.append(block.attn.q_norm.register_forward_hook(self._hook(i, "q", block.attn.scale)))
            self._handles.append(block.attn.k_norm.register_forward_hook(self._hook(i, "k", block.attn.scale)))

    def _hook(self, i: int, what: str, scale: float):
        def hook(module, args, out):
            stash = self._qk.setdefault(i, {})
            stash[what] = out.detach().float()  # (B, H, N + P, d)
            if len(stash) == 2:
                q, k = self._qk.pop(i).values()
                n = q.shape[2] - self.num_prompts
                probs = (q[:, :, :n] @ k.transpose(-2, -1) * scale).softmax(dim=-1)  # (B, H, N, N + P)
                mass = probs[..., n:].sum(dim=-1)  # (B, H, N): attention on the prompts
                self.sums[i] += float(mass.sum())
                self.counts[i] += mass.numel()

        return hook

    def means(self) -> list[float]:
        return [s / c if c else float("nan") for s, c in zip(self.sums, self.counts, strict=True)]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def prompt_attention_profile(
    run: str | Path,
    split: str = "val",
    checkpoint: str = "best",
    seed: int | None = None,
    batch_size: int = 16,
    out_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Per fused layer: side block, LPM block (0-based, as timm's `blocks[i]` and the config's `fused_layers`),
    mean attention on the prompts; also writes CSV + PNG into `out_dir` (default RUN/explain)."""
    from ..config import RunConfig
    from ..methods import get_method
    from ..trainer.evaluate import open_run_store, run_index
    from ..trainer.inputs import eval_loader, make_inputs
    from ..trainer.loop import to_device

    root, run_dir = fpt_run_dirs(run, seed)
    cfg = RunConfig.load(run_dir / "config.yaml")
    index = run_index(root, cfg)
    store = open_run_store(root, cfg, index)
    _, _, cfg, model, _ = _fpt_run(run, checkpoint, seed, "store" if store is not None else "online")
    usable = store.usable() if store is not None else list(range(len(index.samples)))
    method = get_method(cfg.method)
    inputs = make_inputs(method, model, cfg.model, index, store, usable, cfg.train.seed, cfg.data.geometry)
    blocks = [model.side.vit.blocks[b] for b in model.plan.side_blocks]
    probe = PromptAttentionProbe(blocks, cfg.model.num_prompts)
    try:
        with torch.no_grad():
            for batch in eval_loader(getattr(inputs, split), batch_size, 0):
                args, kwargs = model.batch_args(to_device(batch, torch.device("cpu")))
                model(*args, **kwargs)
    finally:
        probe.close()
    plan = model.plan
    rows = [
        {"side_block": b, "lpm_block": layer, "mean_attention_on_prompts": m}
        for b, layer, m in zip(plan.side_blocks, plan.lpm_layers, probe.means(), strict=True)
    ]
    out = Path(out_dir) if out_dir else run_dir / "explain"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"prompt_attention_{split}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _bar_chart(rows, out / f"prompt_attention_{split}.png", split, cfg.model.num_prompts)
    return rows


def _bar_chart(rows: list[dict[str, Any]], path: Path, split: str, num_prompts: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.bar([str(r["lpm_block"]) for r in rows], [r["mean_attention_on_prompts"] for r in rows], color="C1")
    ax.set_xlabel("fused LPM block (0-based, as --layer and fused_layers)")
    ax.set_ylabel("mean attention on the prompts")
    ax.set_title(f"side tokens' attention to the {num_prompts} fused prompts ({split})")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
