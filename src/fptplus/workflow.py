"""The entry points (`fptplus.create_model`, `fptplus.preload`, `fptplus.train`, `fptplus.evaluate`): what the
command line runs, with every default output (plots, TensorBoard, summary).

`fptplus.trainer.run.train` and `fptplus.trainer.evaluate.evaluate_run` are the components; they emit events and know
nothing of pictures. This module adds the default callbacks (it is the one place that ties the trainer to
`fptplus.viz`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .config import DataConfig, RunConfig, build_dataclass
from .methods import get_method
from .trainer.callbacks import Callback, Callbacks, TensorBoard
from .trainer.summary import RunSummary


def create_model(method: str = "fpt_plus", *, source: str = "online", device: Any = None, **config: Any) -> nn.Module:
    """A registered method's model from its config fields, like `timm.create_model`.

    Example: `create_model("fpt_plus", backbone="vit_small_patch14_dinov2", weights="builtin:dinov2_vits14",
    img_size=518, num_classes=2)`; `create_model("lora", backbone="hf:/models/rad-dino", weights="hub")`.

    Args:
        method: a name of `fptplus.available_methods()`.
        source: "online" (the model reads images) or "store" (FPT/FPT+ without the frozen model: reads stored K/V).
        device: parameter device ("meta" for shapes only).
        **config: fields of the method's config (`get_method(method).config_cls`); unknown names and wrong types
            are refused by name. Unset fields keep the method's defaults (the paper's); weights default to random.
    """
    m = get_method(method)
    cfg = build_dataclass(m.config_cls, config, method, m.make_config)
    return m.build(cfg, device=device, source=source)


def preload(data: Any, model: Any, out: str | os.PathLike, **options: Any):
    """Builds (or resumes, or confirms) the feature store of a dataset for an FPT/FPT+ config.

    Args:
        data: a dataset folder, CSV or .zip (split seed 0), a `DataConfig`, or a loaded `DataIndex`.
        model: the `FPTConfig` whose LPM, resolution, fused layers and token ratio are stored.
        out: store folder.
        **options: fields of `fptplus.store.PreloadOptions` (dtype, batch_size, num_workers, ...).
    """
    from .data.index import DataIndex
    from .store import PreloadOptions
    from .store import preload as store_preload

    if not isinstance(data, DataIndex):
        data = (data if isinstance(data, DataConfig) else DataConfig(data=str(data))).load_index()
    return store_preload(data, model, out, build_dataclass(PreloadOptions, options, "preload"))


def default_callbacks() -> list[Callback]:
    """TensorBoard, the run plots (ROC, confusion, curves) and RUN/summary.md."""
    from .viz.callbacks import RunPlots

    return [TensorBoard(), RunPlots(), RunSummary()]


def train(
    cfg: RunConfig,
    out: str | Path,
    seeds: list[int] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[Callback] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """`fptplus.trainer.run.train` with the default callbacks (plus any given)."""
    from .trainer.run import train as run_train

    return run_train(cfg, out, seeds, resume, overwrite=overwrite,
                     callbacks=[*default_callbacks(), *(callbacks or [])], **kwargs)  # fmt: skip


def evaluate(run: str | Path, split: str = "test", checkpoint: str = "best", seed: int | None = None) -> dict[str, Any]:
    """`fptplus.trainer.evaluate.evaluate_run` with the ROC and confusion-matrix pictures."""
    from .trainer.evaluate import evaluate_run
    from .viz.callbacks import RunPlots

    return evaluate_run(run, split, checkpoint, seed, callbacks=Callbacks([RunPlots()]))
