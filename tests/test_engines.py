"""The preload engines: the frozen model's pass exported to OpenVINO / onnxruntime writes the store PyTorch would
(the same tokens, K/V within float16 rounding), is verified before it writes, and training reads either store
alike."""

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

EXPORTER = pytest.mark.skipif(not importlib.util.find_spec("onnxscript"), reason="needs onnxscript (the exporter)")
RUNTIMES = [
    pytest.param(r, marks=[EXPORTER, pytest.mark.skipif(not importlib.util.find_spec(r), reason=f"needs {r}")])
    for r in ("onnxruntime", "openvino")
]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return load_index(class_folders(tmp_path_factory.mktemp("e") / "data", {"neg": 4, "pos": 4}), seed=0)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_exported_engines_store_equals_the_torch_store(index, tmp_path, monkeypatch, runtime):
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    lines = []
    build(index, tmp_path / "torch", dtype="float32", engine="torch")
    build(index, tmp_path / "ort", dtype="float32", engine=runtime, log=lines.append)
    assert any("exported the frozen model's pass (dense importance kernel)" in line for line in lines)
    assert any(f"engine: {runtime} (verified against PyTorch" in line for line in lines)
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
    build(index, tmp_path / "again", dtype="float32", engine=runtime, log=lines.append)
    assert not any("exported" in line for line in lines)  # the graph is cached ...
    record = next((tmp_path / "cache" / "engines").glob(f"*.{runtime}-*.json"))
    assert json.loads(record.read_text())["verified"] is True  # ... with this runtime's verdict


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_graph_that_disagrees_is_refused_or_replaced_by_torch(index, tmp_path, monkeypatch, runtime):
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    from fptplus import engines

    monkeypatch.setattr(engines, "KV_TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(ConfigError, match=f"--engine {runtime} disagrees with PyTorch"):
        build(index, tmp_path / "strict", engine=runtime)
    lines = []
    monkeypatch.setenv("FPTPLUS_ENGINE", "auto")
    monkeypatch.setattr(engines, "RUNTIMES", (runtime,))
    report = build(index, tmp_path / "auto", engine="auto", log=lines.append)
    assert report.complete and any(f"the {runtime} graph disagreed with PyTorch" in x for x in lines)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_predict_through_an_exported_engine_gives_pytorchs_probabilities(tmp_path, monkeypatch, runtime):
    from fptplus.trainer.evaluate import predict
    from runhelp import trained_tiny_run

    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    run = trained_tiny_run(tmp_path)
    files = sorted((tmp_path / "data").rglob("*.png"))[:6]
    lines = []
    a = predict(run, files, num_workers=0).rows
    b = predict(run, files, num_workers=0, engine=runtime, log=lines.append).rows
    assert any("logits within" in line for line in lines)
    for x, y in zip(a, b, strict=True):
        assert x["path"] == y["path"] and abs(x["prob_pos"] - y["prob_pos"]) < 1e-4


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_micro_batches_and_the_chunked_graph_give_pytorchs_features(tmp_path, monkeypatch, runtime):
    """A dense graph split into one-image calls (also after its threads change), and the chunked graph used where a
    dense map would not fit, all pass the same verification as the default graph."""
    import torch

    from fptplus import engines
    from fptplus.backbones.timm_vit import create_vit
    from fptplus.lpm import FrozenLPM

    from conftest import TINY, images

    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    lpm = FrozenLPM(create_vit("vit_base_patch16_224", 64, **{**TINY, "depth": 3}), "vit_base_patch16_224", layers=2,
                    token_ratio=0.3)  # fmt: skip
    x, lines = images(3, 64), []
    monkeypatch.setattr(engines, "BATCH_MAP_BYTES", 1)  # every image alone
    dense = engines._CLASSES[runtime](lpm, engines.graph_key(lpm, {"source": "seed 0"}, {}), log=lines.append)
    assert (dense.kernel, dense.micro) == ("dense", 1)
    assert dense.verify(x) == [] and dense(x).keys.shape[0] == 3
    dense.set_threads(1)  # what `auto` threads do when they give a core to the decode workers
    assert dense.verify(x) == []
    monkeypatch.setattr(engines, "DENSE_MAX_BYTES", 0)  # no map fits: the chunked kernel is exported instead
    key = engines.graph_key(lpm, {"source": "seed 0"}, {})
    chunked = engines._CLASSES[runtime](lpm, key, log=lines.append)
    assert (chunked.kernel, chunked.micro) == ("chunked", None) and chunked.path != dense.path
    assert chunked.verify(x) == []
    assert any("(chunked importance kernel)" in line for line in lines)


@EXPORTER
@pytest.mark.skipif(not importlib.util.find_spec("openvino"), reason="needs openvino")
def test_openvino_leaves_the_threads_signal_stack_as_it_found_it(tmp_path, monkeypatch):
    """OpenVINO's CPU plugin installs its own alternate signal stack and later unmaps it; left there, the next signal
    handled on that stack killed the test process (issue 29). Compiling, running, evicting and dropping engines keep
    the thread's own stack."""
    import gc

    import torch

    from fptplus import engines
    from fptplus.backbones.timm_vit import create_vit
    from fptplus.lpm import FrozenLPM
    from fptplus.sigstack import signal_stack

    from conftest import TINY, images

    if signal_stack() is None:
        pytest.skip("no sigaltstack on this platform")
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    lpm = FrozenLPM(create_vit("vit_base_patch16_224", 32, **{**TINY, "depth": 2}), "vit_base_patch16_224", layers=1,
                    token_ratio=0.3)  # fmt: skip
    before = signal_stack()
    engine = engines.OpenVinoEngine(lpm, engines.graph_key(lpm, {"source": "seed 0"}, {}), log=lambda _: None)
    for batch in (1, 2, 3, 4, 1):  # four batch sizes: the first compiled model is evicted
        engine(images(batch, 32))
        assert signal_stack() == before
    assert len(engine.compiled) == 3
    del engine
    gc.collect()
    assert signal_stack() == before


def _kept(scores, k: int):
    """LPMFeatures of the k best of (B, L, H, N) scores, as an engine returns them (best first, with their scores)."""
    import torch

    from fptplus.lpm import LPMFeatures

    top = scores.topk(k, dim=-1)
    kv = torch.zeros(*top.indices.shape, 2)
    return LPMFeatures(kv, kv, top.indices, scores=top.values)


def test_a_swap_between_near_equal_scores_at_the_boundary_is_not_a_disagreement():
    """Float sums in another order swap near-ties (many on identical black letterbox patches, seen at 1120 px: 99.85 %
    of the tokens the same) — that passes; a kept token the reference ranks clearly below its boundary, or kept
    scores that differ, do not."""
    import torch

    from fptplus.engines import selection_problems

    torch.manual_seed(0)
    scores = torch.rand(2, 3, 4, 50) + 0.1  # (B, L, H, N)
    scores[0, 1, 2, 10], scores[0, 1, 2, 11] = 0.5, 0.5  # a tie ...
    k = int((scores[0, 1, 2] > 0.5).sum()) + 1  # ... exactly at the boundary of one row
    want = _kept(scores, k)
    assert selection_problems(want, _kept(scores, k)) == []
    swapped = scores.clone()
    swapped[0, 1, 2, 10], swapped[0, 1, 2, 11] = 0.5 - 1e-6, 0.5 + 1e-6  # rounding flips the tie
    got = _kept(swapped, k)
    assert not torch.equal(got.indices.sort(-1).values, want.indices.sort(-1).values)
    assert selection_problems(want, got) == []
    wrong = scores.clone()
    wrong[1, 0, 0, wrong[1, 0, 0].argmin()] = 2.0  # the engine ranks the reference's worst token first
    problems = selection_problems(want, _kept(wrong, k))
    assert len(problems) == 2 and "not near-ties" in problems[1] and "scores differ" in problems[0]
    problems = selection_problems(want, _kept(scores * (1 + 1e-2), k))  # the same tokens, scores 1 % off
    assert len(problems) == 1 and "scores differ by up to 1.00e-02" in problems[0]
    assert selection_problems(want, _kept(scores * (1 + 1e-5), k)) == []  # within float rounding


def test_a_verdict_of_another_check_version_is_checked_again(tmp_path, monkeypatch):
    from fptplus import engines

    engine = object.__new__(engines.OnnxEngine)
    engine.record = tmp_path / "v.json"
    assert engine._verdict() is None
    engine.record.write_text(json.dumps({"verified": False}))  # written before the near-tie check
    assert engine._verdict() is None
    engine.record.write_text(json.dumps({"verified": False, "check": engines.CHECK_VERSION}))
    assert engine._verdict() is False


def test_token_agreement_counts_a_swapped_token_once():
    """One swapped token of k costs 1/k of its row, however early it sorts (position by position it cost k − 1)."""
    import torch

    from fptplus.engines import token_agreement

    a = torch.tensor([[0, 1, 2, 3, 4], [9, 8, 7, 6, 5]])
    b = torch.tensor([[10, 1, 2, 3, 4], [5, 6, 7, 8, 9]])  # row 0: token 0 swapped for 10; row 1: same set
    assert token_agreement(a, b) == pytest.approx(0.9)
    assert (a.sort(-1).values == b.sort(-1).values).float().mean().item() == 0.5  # what the position count said
