"""The trainer end to end on tiny ViTs: CLI flow, exact resume, selection, refusals, single-class val."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fptplus.cli import main
from fptplus.errors import ConfigError
from fptplus.methods import get_method
from fptplus.trainer.checkpoint import CheckpointError, load_checkpoint
from imagegen import split_folders
from runhelp import run_cli, tiny_data, tiny_weights, train_args

from conftest import TINY, build_tiny, tiny_config


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights(tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("d"))


def test_cli_preload_train_evaluate_predict(data, weights, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(data, run, weights)) == 0
    results = json.loads((run / "results.json").read_text())
    for name in ("config.yaml", "splits.csv", "classes.json", "log.txt", "metrics.csv", "metrics.jsonl"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert results["source"] == "store" and results["test"]["n"] == 4 and results["test"]["auc_ci"] is not None
    assert results["checkpoint_bytes"] < 200_000  # trainable tensors only
    assert results["device"] == "cpu" and results["process_peak_rss_mb"] > 0 and 0 < results["train_step_mb"] < 50
    from fptplus.bench.memory import measure_step
    from fptplus.config import RunConfig

    saved = RunConfig.load(run / "config.yaml")
    step = measure_step("fpt_plus", saved.model, 4, "meta", "fused", "store").breakdown.peak / 2**20
    assert results["train_step_mb"] == pytest.approx(step)  # the tables' accounting of this very run
    assert "Memory: one training step" in (run / "summary.md").read_text()
    summary = (run / "summary.md").read_text()
    assert "| fpt_plus | 0 | " in summary and f"fptplus evaluate {run}" in summary and "fptplus explain" in summary
    out_text = capsys.readouterr().out
    assert "next:" in out_text and f"fptplus predict {run}" in out_text and "KiB (trainable tensors only)" in out_text
    assert f"fptplus audit --data {data} --run {run}" in out_text
    preds = (run / "predictions_test.csv").read_text().splitlines()
    assert preds[0] == "path,label,p_neg,p_pos" and len(preds) == 1 + 4
    assert all(row.split(",")[0].startswith(("neg/", "pos/")) for row in preds[1:])
    ckpt = load_file(run / "checkpoints" / "best" / "model.safetensors")
    assert all(k.startswith(("side.", "fusion.")) for k in ckpt)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    assert "on val: AUC" in capsys.readouterr().out
    val = json.loads((run / "eval-val-best.json").read_text())
    assert val["loss"] == pytest.approx(results["val"]["loss"], abs=1e-6)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), str(data / "pos"), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "path,prediction,prob_neg,prob_pos" and len(lines) == 13
    probs = np.array([[float(x) for x in line.split(",")[2:]] for line in lines[1:]])
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_predict_matches_evaluation_from_the_store(data, weights, tmp_path):
    """predict (LPM online, from the image files) gives the probabilities evaluation computes from the store."""
    from accelerate import Accelerator

    from fptplus.store import FeatureStore
    from fptplus.trainer.evaluate import load_trained, predict
    from fptplus.trainer.inputs import eval_loader, make_inputs
    from fptplus.trainer.loop import predict_probs

    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--epochs", "1")) == 0
    store = FeatureStore(run / "store")
    cfg, model, _ = load_trained(run, "best", "store")
    from fptplus.data.sources import load_index

    index = load_index(data)
    inputs = make_inputs(get_method("fpt_plus"), model, cfg.model, index, store, store.usable(), 0)
    probs, _, _ = predict_probs(model, eval_loader(inputs.test, 4, 0), Accelerator(cpu=True))
    files = [data / index.samples[i].path for i in inputs.test.indices]
    rows = predict(run, files).rows
    online = np.array([[r["prob_neg"], r["prob_pos"]] for r in rows])
    assert [r["path"] for r in rows] == [str(f) for f in files]
    np.testing.assert_allclose(online, probs, atol=2e-3)  # the store holds fp16 K/V


def test_online_training_and_multi_seed_summary(data, weights, tmp_path):
    run = tmp_path / "online"
    assert main(train_args(data, run, weights, "--no-preload", "--epochs", "1", "--seeds", "0,1")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["test"]["auc"]) == {"mean", "std", "values"}
    r0 = json.loads((run / "seed-0" / "results.json").read_text())
    r1 = json.loads((run / "seed-1" / "results.json").read_text())
    assert r0["source"] == "online" and not (run / "store").exists()
    assert r0["val"]["loss"] != r1["val"]["loss"]  # different seeds, different runs


def test_best_checkpoint_is_the_best_validation_epoch(data, weights, tmp_path):
    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--epochs", "4", "--lr", "0.01")) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    aucs = [h["val_auc"] for h in history]
    best = int(np.argmax(aucs))  # first maximum
    results = json.loads((run / "results.json").read_text())
    assert results["best_epoch"] == best + 1 and results["selection"] == "val AUC"
    meta = json.loads((run / "checkpoints" / "best" / "meta.json").read_text())
    assert meta["epoch"] == best + 1
    assert results["val"]["auc"] == pytest.approx(aucs[best])
    assert results["val"]["loss"] == pytest.approx(history[best]["val_loss"], abs=1e-6)


def test_checkpoint_of_another_model_is_refused(data, weights, tmp_path):
    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--epochs", "1")) == 0
    ckpt = run / "checkpoints" / "best"
    other = build_tiny(tiny_config(num_classes=3))
    with pytest.raises(CheckpointError, match="num_classes: checkpoint 2, this run 3"):
        load_checkpoint(ckpt, other, {"method": "fpt_plus", "backbone": "vit_base_patch16_224", "num_classes": 3})
    with pytest.raises(CheckpointError, match="method: checkpoint 'fpt_plus', this run 'fpt'"):
        load_checkpoint(ckpt, other, {"method": "fpt"})
    deeper = build_tiny(tiny_config(num_classes=2, num_prompts=8))
    with pytest.raises(CheckpointError, match="trainable tensors differ"):
        load_checkpoint(ckpt, deeper, {"num_classes": 2})


def test_single_class_validation_split(weights, tmp_path):
    data = split_folders(tmp_path / "d", {"train": {"a": 6, "b": 6}, "val": {"a": 3}, "test": {"a": 2, "b": 2}})
    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--allow-missing-classes", "--epochs", "2")) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["selection"] == "val loss" and results["val"]["auc"] is None
    assert "single class" in results["val"]["auc_note"] and results["test"]["auc"] is not None
    assert "model selection uses the validation loss" in (run / "log.txt").read_text()


def test_refusals(data, weights, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(train_args(data, run, weights)) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--lr", "0.5"]) == 2
    assert "drop --lr — start a new run" in capsys.readouterr().err
    for extra, named in [(["--set", "num_prompts=8"], "--set num_prompts=8"), (["--method", "fpt"], "--method"),
                         (["--seeds", "1,2"], "--seeds"), (["--out", str(tmp_path / "x")], "--out")]:  # fmt: skip
        assert main(["train", "--resume", str(run), *extra]) == 2
        assert f"drop {named}" in capsys.readouterr().err
    assert main(train_args(data, tmp_path / "r2", weights, "--lr", "-1")) == 2
    assert "lr must be a finite number > 0" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_resume_after_kill_equals_uninterrupted(data, weights, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = lambda out: train_args(data, out, weights, "--epochs", "3")  # noqa: E731
    assert run_cli(args(ref)).returncode == 0
    killed = run_cli(args(run), crash="train-step:7")  # 5 steps per epoch: killed inside epoch 2
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "results.json").exists()
    resumed = run_cli(["train", "--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stdout
    a = json.loads((ref / "results.json").read_text())
    b = json.loads((run / "results.json").read_text())
    for key in ("best_epoch", "val", "test"):
        assert a[key] == b[key], key
    ta = load_file(ref / "checkpoints" / "last" / "model.safetensors")
    tb = load_file(run / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    ha = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    drop = ("epoch_seconds", "eval_seconds")
    assert [{k: v for k, v in h.items() if k not in drop} for h in ha] == [
        {k: v for k, v in h.items() if k not in drop} for h in hb
    ]


@pytest.mark.parametrize("method", ["linear_adamw", "adalora"])
def test_baselines_train_evaluate_predict(method, data, weights, tmp_path, capsys):
    run = tmp_path / method
    args = ["train", "--method", method, "--data", str(data), "--out", str(run), "--weights", str(weights),
            "--epochs", "2", "--batch-size", "4", "--num-workers", "0", "--bootstrap", "0", "--img-size", "64",
            "--backbone-kwargs", repr(TINY)]  # fmt: skip
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["method"] == method and results["source"] == "online" and not (run / "store").exists()
    ckpt = load_file(run / "checkpoints" / "best" / "model.safetensors")
    assert all(k.startswith("head.") or ".lora_" in k for k in ckpt)
    if method == "adalora":
        from fptplus.config import RunConfig

        saved = RunConfig.load(run / "config.yaml")
        assert saved.model.total_step is None  # recomputed from the data by the trainer, also on resume
    out = tmp_path / "p.json"
    assert main(["predict", str(run), str(data / "neg" / "img0.png"), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[0]["prediction"] in ("neg", "pos") and abs(rows[0]["prob_neg"] + rows[0]["prob_pos"] - 1) < 1e-5
    if method == "adalora" and importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 0  # peft-wrapped ViT, one input
        side = json.loads((tmp_path / "m.json").read_text())
        assert list(side["inputs"]) == ["image"] and side["parity"]["max_abs_logit_diff"] <= 1e-4


def test_two_process_ddp_training(data, weights, tmp_path):
    """torchrun with 2 CPU processes (gloo): one run folder, every val/test image evaluated exactly once."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "fptplus.cli",
           *train_args(data, run, weights, "--epochs", "2")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["val"]["n"] == 4 and results["test"]["n"] == 4
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_predict_skip_bad_reports_and_lists_the_skipped_files(data, weights, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--epochs", "1")) == 0
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(data / "neg" / "img0.png", new / "good.png")
    (new / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "p.csv"
    capsys.readouterr()
    assert main(["predict", str(run), str(new), "--out", str(out)]) == 2
    assert "broken.png" in capsys.readouterr().err and not out.exists()
    assert main(["predict", str(run), str(new), "--out", str(out), "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert f"skipped 1 undecodable images (listed in {tmp_path / 'p.skipped.csv'})" in err and "broken.png" in err
    assert len(out.read_text().splitlines()) == 2  # header + good.png
    skipped = (tmp_path / "p.skipped.csv").read_text().splitlines()
    assert skipped[0] == "path,error" and skipped[1].startswith(str(new / "broken.png"))


def test_predict_with_decode_workers_equals_predict_in_process(data, weights, tmp_path):
    """Worker-decoded batches give the same rows, in the order given, with a bad file in the middle."""
    import shutil

    from fptplus.trainer.evaluate import predict

    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--epochs", "1")) == 0
    new = tmp_path / "new"
    new.mkdir()
    for i in range(5):
        shutil.copy(data / ("neg" if i % 2 else "pos") / f"img{i}.png", new / f"{i}.png")
    (new / "2b.png").write_bytes(b"not an image")
    files = sorted(new.iterdir())
    inline = predict(run, files, batch_size=2, skip_bad=True, num_workers=0)
    workers = predict(run, files, batch_size=2, skip_bad=True, num_workers=2)
    assert [r["path"] for r in workers.rows] == [str(f) for f in files if f.name != "2b.png"]
    assert workers.rows == inline.rows and [s["path"] for s in workers.skipped] == [str(new / "2b.png")]
    with pytest.raises(ConfigError, match="num_workers >= 0"):
        predict(run, files, num_workers=-1)


def test_export_onnx_matches_pytorch_in_onnxruntime(data, weights, tmp_path, capsys):
    """The whole FPT+ (LPM + selection + fusion + side network) as ONNX: same logits in onnxruntime, any batch."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    from fptplus.trainer.evaluate import load_trained

    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--epochs", "1")) == 0
    out = tmp_path / "export" / "model.onnx"
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["classes"] == ["neg", "pos"] and list(side["inputs"]) == ["side", "lpm"]
    assert side["parity"]["max_abs_logit_diff"] <= 1e-4
    _, model, _ = load_trained(run, "best", "online")
    g = torch.Generator().manual_seed(5)
    x = {n: torch.randn(5, *side["inputs"][n]["shape"][1:], generator=g) for n in ("side", "lpm")}
    with torch.no_grad():
        want = model(x["side"], lpm_x=x["lpm"]).numpy()  # the default (fused) importance kernel
    got = ort.InferenceSession(str(out)).run(["logits"], {n: t.numpy() for n, t in x.items()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert main(["export", str(run), "--out", str(out)]) == 2  # exists: refused
    assert "--overwrite" in capsys.readouterr().err


def test_calibration_is_recorded_and_applied_by_predict(data, weights, tmp_path):
    """results.json holds ECE / temperature / threshold computed from the run's own predictions; predict applies
    the temperature and the threshold, and refuses a calibration fitted for other weights."""
    import csv

    from fptplus.calibration import apply_temperature, clinical_report
    from fptplus.trainer.checkpoint import CheckpointError
    from fptplus.trainer.evaluate import predict

    run = tmp_path / "run"
    assert main(train_args(data, run, weights, "--epochs", "2", "--threshold", "sens:0.5")) == 0
    results = json.loads((run / "results.json").read_text())
    cal = results["calibration"]

    def split(name):
        with open(run / f"predictions_{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        return (np.array([["neg", "pos"].index(r["label"]) for r in rows]),
                np.array([[float(r["p_neg"]), float(r["p_pos"])] for r in rows]))  # fmt: skip

    (vl, vp), (tl, tp) = split("val"), split("test")
    again = clinical_report(vl, vp, tl, tp, "sens:0.5", ci_samples=100)
    assert cal["temperature"] == pytest.approx(again["temperature"], rel=1e-3)  # csv rounds to 6 digits
    assert cal["ece"]["test"] == pytest.approx(again["ece"]["test"], abs=1e-5)
    assert cal["threshold"]["rule"] == "sens:0.5"
    assert cal["threshold"]["value"] == pytest.approx(again["threshold"]["value"], abs=1e-5)
    files = [data / "neg" / "img0.png", data / "pos" / "img1.png", data / "pos" / "img2.png"]
    raw = predict(run, files, num_workers=0).rows
    assert cal["temperature"] == 1.0 and cal["temperature_note"].startswith("not fitted: 4 validation images")
    with pytest.raises(ConfigError, match="--calibrated would change nothing"):
        predict(run, files, num_workers=0, calibrated=True)
    record = json.loads((run / "calibration.json").read_text())  # as a run with a supported temperature records it
    (run / "calibration.json").write_text(json.dumps({**record, "temperature": 2.0, "temperature_note": "fitted"}))
    scaled = predict(run, files, num_workers=0, calibrated=True).rows
    p = np.array([[r["prob_neg"], r["prob_pos"]] for r in raw])
    want = apply_temperature(p, 2.0)
    np.testing.assert_allclose([[r["prob_neg"], r["prob_pos"]] for r in scaled], want, atol=1e-6)
    decided = predict(run, files, num_workers=0, decision="threshold").rows
    thr = cal["threshold"]["value"]
    assert [r["prediction"] for r in decided] == ["pos" if q[1] >= thr else "neg" for q in p]
    assert all(r["threshold"] == thr for r in decided)
    record = json.loads((run / "calibration.json").read_text())
    (run / "calibration.json").write_text(json.dumps({**record, "model_sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="fitted for another best checkpoint"):
        predict(run, files, calibrated=True)
    with pytest.raises(ConfigError, match="decision"):
        predict(run, files, decision="vote")
