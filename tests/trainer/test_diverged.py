"""A diverged model never yields a metric or a checkpoint: NaN/inf scores, losses, weights, learning rates, features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fptplus.cli import main
from fptplus.errors import ConfigError, DivergedError
from fptplus.metrics import auc, binary_auc, compute_metrics
from fptplus.trainer.checkpoint import save_checkpoint
from runhelp import tiny_data, tiny_weights, train_args


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("div")
    return root, tiny_data(root), tiny_weights(root)


def test_nan_scores_never_give_a_metric():
    labels = np.array([0, 1, 0, 1])
    nan = np.full((4, 2), np.nan)
    for call in (lambda: auc(labels, nan), lambda: binary_auc(labels == 1, nan[:, 1]),
                 lambda: compute_metrics(labels, nan, float("nan"))):  # fmt: skip
        with pytest.raises(DivergedError, match="NaN or infinite"):
            call()
    one = np.array([[0.2, 0.8], [np.inf, 0.0], [0.5, 0.5], [0.1, 0.9]])
    with pytest.raises(DivergedError, match="1 of 4"):
        compute_metrics(labels, one, 0.3)


def test_a_diverged_run_stops_with_the_fix_and_keeps_nothing(setup, capsys):
    root, data, weights = setup
    run = root / "lr300"
    assert main(train_args(data, run, weights, "--lr", "300")) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "seed 0, epoch 1" in err and "try --lr 30" in err
    assert not (run / "results.json").exists() and not (run / "checkpoints" / "best").exists()


def test_non_finite_learning_rates_are_refused(setup, capsys):
    root, data, weights = setup
    config = root / "inf.yaml"
    config.write_text("method: fpt_plus\ntrain:\n  lr: .inf\n")
    assert main(train_args(data, root / "inf", weights, "--config", str(config))) == 2
    assert "lr must be a finite number > 0, got inf" in capsys.readouterr().err
    assert main(train_args(data, root / "nan", weights, "--lr", "nan")) == 2
    assert "lr must be a finite number" in capsys.readouterr().err
    from fptplus.config import TrainConfig

    with pytest.raises(ConfigError):
        TrainConfig(weight_decay=float("inf"))


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(DivergedError, match="NaN/inf"):
        save_checkpoint(tmp_path / "best", model, {"method": "x"})
    assert not (tmp_path / "best").exists()


def test_a_store_of_nan_keys_never_gives_a_metric(setup, capsys):
    root, data, weights = setup
    run = root / "nan-store"
    assert main(train_args(data, run, weights, "--epochs", "1")) == 0
    for f in (run / "store").glob("*.keys.npy"):
        arr = np.load(f, mmap_mode="r+")
        arr[:] = np.nan
        arr.flush()
    assert main(["evaluate", str(run)]) == 2  # the shard's bytes are not what the preload wrote
    assert "differs from what the preload wrote" in capsys.readouterr().err
    assert not (run / "eval-test-best.json").exists()
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["auc"] is None or np.isfinite(results["test"]["auc"])  # the run's own, before the damage
