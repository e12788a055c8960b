"""The trainer's events: callbacks receive what the plots and summaries need; without them nothing is drawn."""

from __future__ import annotations

import numpy as np

from fptplus.config import DataConfig, RunConfig, TrainConfig
from fptplus.trainer.callbacks import Callback
from fptplus.trainer.run import train
from imagegen import class_folders
from storetools import store_cfg


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, run):
        self.events.append(("fit_start", run.root.name, tuple(run.classes), run.params.trainable > 0))

    def on_step(self, run, step, loss, lr):
        self.events.append(("step", step, np.isfinite(loss), lr >= 0))

    def on_epoch_end(self, run, row):
        self.events.append(("epoch", row["epoch"], "val_auc" in row and "train_loss" in row))

    def on_evaluated(self, run, split, labels, probs, history):
        self.events.append(("evaluated", split, labels.shape[0] == probs.shape[0], probs.shape[1], len(history)))

    def on_fit_end(self, run, results):
        self.events.append(("fit_end", sorted(results)[:3]))

    def on_train_end(self, root, cfg, summary, seeds):
        self.events.append(("train_end", tuple(seeds), "auc" in summary["test"]))


def test_events_in_order_and_no_pictures_without_the_plot_callback(tmp_path):
    data = class_folders(tmp_path / "data", {"neg": 8, "pos": 8}, size=(48, 48))
    cfg = RunConfig("fpt_plus", store_cfg(), DataConfig(data=str(data)),
                    TrainConfig(epochs=2, batch_size=4, num_workers=0, bootstrap=0))  # fmt: skip
    recorder = Recorder()
    train(cfg, tmp_path / "run", callbacks=[recorder])
    kinds = [e[0] for e in recorder.events]
    assert kinds[0] == "fit_start" and kinds[-2:] == ["fit_end", "train_end"]
    assert [e for e in recorder.events if e[0] == "epoch"] == [("epoch", 1, True), ("epoch", 2, True)]
    steps = [e for e in recorder.events if e[0] == "step"]
    assert len(steps) == 6 and all(e[2] and e[3] for e in steps)  # 12 train images / batch 4, 2 epochs
    assert [e[1:] for e in recorder.events if e[0] == "evaluated"] == [("val", True, 2, 2), ("test", True, 2, 2)]
    assert recorder.events[0][2] == ("neg", "pos") and recorder.events[-1] == ("train_end", (0,), True)
    run = tmp_path / "run"
    assert (run / "results.json").exists() and not list(run.glob("*.png"))  # pictures come from a callback
    assert not (run / "tensorboard").exists() and not (run / "summary.md").exists()


def test_the_workflow_adds_plots_tensorboard_and_summary(tmp_path):
    from fptplus import workflow

    data = class_folders(tmp_path / "data", {"neg": 8, "pos": 8}, size=(48, 48))
    cfg = RunConfig("fpt_plus", store_cfg(), DataConfig(data=str(data)),
                    TrainConfig(epochs=1, batch_size=4, num_workers=0, bootstrap=0))  # fmt: skip
    workflow.train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("roc_test.png", "confusion_test.png", "reliability_test.png", "curves.png", "summary.md"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    workflow.evaluate(run, "val")
    assert (run / "roc_val-best.png").exists() and (run / "confusion_val-best.png").exists()
