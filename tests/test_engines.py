"""The preload engines: the frozen model's pass exported to onnxruntime writes the store PyTorch would (the same
tokens, K/V within float16 rounding), is verified before it writes, and training reads either store alike."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from fptplus.data.sources import load_index
from fptplus.errors import ConfigError
from fptplus.store import FeatureStore
from imagegen import class_folders
from storetools import build

pytestmark = pytest.mark.skipif(
    not (importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript")),
    reason="needs onnxruntime and onnxscript",
)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return load_index(class_folders(tmp_path_factory.mktemp("e") / "data", {"neg": 4, "pos": 4}), seed=0)


def test_an_onnxruntime_store_equals_the_torch_store(index, tmp_path, monkeypatch):
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    lines = []
    build(index, tmp_path / "torch", dtype="float32", engine="torch")
    build(index, tmp_path / "ort", dtype="float32", engine="onnxruntime", log=lines.append)
    assert any("exported the frozen model's pass" in line for line in lines)
    assert any("engine: onnxruntime (verified against PyTorch" in line for line in lines)
    a, b = FeatureStore(tmp_path / "torch"), FeatureStore(tmp_path / "ort")
    assert a.fingerprint == b.fingerprint  # the engine is not part of what a store is
    for i in range(len(index.samples)):
        ra, rb = a[i], b[i]
        same = np.sort(ra["indices"], -1) == np.sort(rb["indices"], -1)
        assert same.mean() >= 0.999
        order_a, order_b = np.argsort(ra["indices"], -1), np.argsort(rb["indices"], -1)
        for f in ("keys", "values"):
            x = np.take_along_axis(ra[f], order_a[..., None], -2)
            y = np.take_along_axis(rb[f], order_b[..., None], -2)
            rows = same.all(-1)
            np.testing.assert_allclose(x[rows], y[rows], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(ra["cls"], rb["cls"], atol=1e-4)
    lines.clear()
    build(index, tmp_path / "again", dtype="float32", engine="onnxruntime", log=lines.append)
    assert not any("exported" in line for line in lines)  # the graph is cached ...
    record = next((tmp_path / "cache" / "engines").glob("*.json"))
    assert json.loads(record.read_text())["verified"] is True  # ... with its verdict


def test_a_graph_that_disagrees_is_refused_or_replaced_by_torch(index, tmp_path, monkeypatch):
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    from fptplus import engines

    monkeypatch.setattr(engines, "KV_TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(ConfigError, match="--engine onnxruntime disagrees with PyTorch"):
        build(index, tmp_path / "strict", engine="onnxruntime")
    lines = []
    monkeypatch.setenv("FPTPLUS_ENGINE", "auto")
    report = build(index, tmp_path / "auto", engine="auto", log=lines.append)
    assert report.complete and any("engine: torch (the onnxruntime graph disagreed" in x for x in lines)


def test_predict_through_onnxruntime_gives_pytorchs_probabilities(tmp_path, monkeypatch):
    from fptplus.trainer.evaluate import predict
    from runhelp import trained_tiny_run

    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    run = trained_tiny_run(tmp_path)
    files = sorted((tmp_path / "data").rglob("*.png"))[:6]
    lines = []
    a = predict(run, files, num_workers=0).rows
    b = predict(run, files, num_workers=0, engine="onnxruntime", log=lines.append).rows
    assert any("logits within" in line for line in lines)
    for x, y in zip(a, b, strict=True):
        assert x["path"] == y["path"] and abs(x["prob_pos"] - y["prob_pos"]) < 1e-4
