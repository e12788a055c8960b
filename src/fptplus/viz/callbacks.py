"""The run pictures as a trainer callback: ROC, confusion matrix and (for training) the loss/AUC curves."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..trainer.callbacks import Callback, RunInfo
from .curves import plot_confusion, plot_roc, write_run_plots


class RunPlots(Callback):
    """roc_test.png, confusion_test.png and curves.png when a run's best checkpoint is tested; roc_SPLIT-CKPT.png
    and confusion_SPLIT-CKPT.png for `fptplus evaluate`."""

    def on_evaluated(self, run: RunInfo, split: str, labels: np.ndarray, probs: np.ndarray,
                     history: list[dict[str, Any]]) -> None:  # fmt: skip
        if history:  # the trainer's final evaluation
            if split == "test":
                write_run_plots(run.root, history, split, labels, probs, run.classes)
            return
        plot_roc(labels, probs, run.classes, run.root / f"roc_{split}.png", f"ROC ({split})")
        if np.ndim(labels) == 2:  # multi-label: no confusion matrix
            return
        plot_confusion(labels, probs, run.classes, run.root / f"confusion_{split}.png", split)
