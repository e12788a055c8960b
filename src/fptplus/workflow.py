"""The command line's workflow: training and evaluation with every default output (plots, TensorBoard, summary).

`fptplus.train.run.train` and `fptplus.train.evaluate.evaluate_run` are the components; they emit events and know
nothing of pictures. This module adds the default callbacks (it is the one place that ties the trainer to
`fptplus.viz`), and is what `fptplus train` / `fptplus evaluate` and the top-level `fptplus.train` run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import RunConfig
from .train.callbacks import Callback, Callbacks, TensorBoard
from .train.summary import RunSummary


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
    """`fptplus.train.run.train` with the default callbacks (plus any given)."""
    from .train.run import train as run_train

    return run_train(cfg, out, seeds, resume, overwrite=overwrite,
                     callbacks=[*default_callbacks(), *(callbacks or [])], **kwargs)  # fmt: skip


def evaluate(run: str | Path, split: str = "test", checkpoint: str = "best", seed: int | None = None) -> dict[str, Any]:
    """`fptplus.train.evaluate.evaluate_run` with the ROC and confusion-matrix pictures."""
    from .train.evaluate import evaluate_run
    from .viz.callbacks import RunPlots

    return evaluate_run(run, split, checkpoint, seed, callbacks=Callbacks([RunPlots()]))
