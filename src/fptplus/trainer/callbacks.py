"""What the trainer tells the world: events delivered to callbacks, so that plots, TensorBoard and summaries are
optional components and the trainer itself never imports them.

    on_fit_start(run)                              a seed's run begins (folder, config, parameter count)
    on_step(run, step, loss, lr)                   after every optimizer step
    on_epoch_end(run, row)                         after each epoch's validation (`row`: the metrics history row)
    on_evaluated(run, split, labels, probs, history)   the best checkpoint on val / test (labels (n,), probs (n, C))
    on_fit_end(run, results)                       the seed's results.json content
    on_train_end(root, cfg, summary, seeds)        all seeds done (summary over seeds)

Callbacks run on the main process only. `fptplus.workflow.default_callbacks()` is what the command line uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class RunInfo:
    """The seed run an event belongs to."""

    root: Path
    config: Any
    classes: list[str]
    params: Any = None


class Callback:
    """Base class: override the events you need."""

    def on_fit_start(self, run: RunInfo) -> None:
        pass

    def on_step(self, run: RunInfo, step: int, loss: float, lr: float) -> None:
        pass

    def on_epoch_end(self, run: RunInfo, row: dict[str, Any]) -> None:
        pass

    def on_evaluated(self, run: RunInfo, split: str, labels: np.ndarray, probs: np.ndarray,
                     history: list[dict[str, Any]]) -> None:  # fmt: skip
        pass

    def on_fit_end(self, run: RunInfo, results: dict[str, Any]) -> None:
        pass

    def on_train_end(self, root: Path, cfg: Any, summary: dict[str, Any], seeds: list[int]) -> None:
        pass


class Callbacks(Callback):
    """Several callbacks as one (each event goes to each, in order); empty off the main process."""

    def __init__(self, callbacks: list[Callback] | None = None, enabled: bool = True) -> None:
        self.callbacks = list(callbacks or []) if enabled else []

    def on_fit_start(self, run: RunInfo) -> None:
        for c in self.callbacks:
            c.on_fit_start(run)

    def on_step(self, run: RunInfo, step: int, loss: float, lr: float) -> None:
        for c in self.callbacks:
            c.on_step(run, step, loss, lr)

    def on_epoch_end(self, run: RunInfo, row: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_epoch_end(run, row)

    def on_evaluated(self, run: RunInfo, split: str, labels: np.ndarray, probs: np.ndarray,
                     history: list[dict[str, Any]]) -> None:  # fmt: skip
        for c in self.callbacks:
            c.on_evaluated(run, split, labels, probs, history)

    def on_fit_end(self, run: RunInfo, results: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_fit_end(run, results)

    def on_train_end(self, root: Path, cfg: Any, summary: dict[str, Any], seeds: list[int]) -> None:
        for c in self.callbacks:
            c.on_train_end(root, cfg, summary, seeds)


class TensorBoard(Callback):
    """train/loss and train/lr per step, val/<metric> per epoch, in RUN/tensorboard (needs `tensorboard`)."""

    def __init__(self) -> None:
        self.writer = None

    def on_fit_start(self, run: RunInfo) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency; stay usable without it
            return
        self.writer = SummaryWriter(str(run.root / "tensorboard"))

    def on_step(self, run: RunInfo, step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def on_epoch_end(self, run: RunInfo, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k.startswith("val_") and isinstance(v, (int, float)) and v is not None:
                self.writer.add_scalar(f"val/{k[4:]}", v, row["epoch"])

    def on_fit_end(self, run: RunInfo, results: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
