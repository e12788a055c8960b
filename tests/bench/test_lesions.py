"""Lesion shares of a selection: patch cover against a per-patch count, the shares against counting by hand."""

import importlib.util

import numpy as np
import pytest
import torch

from fptplus.bench.lesions import bootstrap_ratio, content_patches, image_row, patch_cover, table


def test_patch_cover_matches_counting_pixels_per_patch_when_nothing_is_resized():
    g, patch = 4, 8
    mask = torch.zeros(g * patch, g * patch)
    mask[3:12, 20:31] = 1  # straddles patches (0..1, 2..3)
    mask[30, 0] = 1  # one pixel in the corner patch
    cover = patch_cover(mask, (0, 0, g * patch, g * patch), g * patch, patch)
    expected = mask.reshape(g, patch, g, patch).mean(dim=(1, 3))
    torch.testing.assert_close(cover, expected)


def test_patch_cover_follows_the_crop_box_and_the_letterbox():
    # a 40 x 20 frame whose content box is its right half (20 x 20 -> no letterbox bars), lesion in its top-left
    mask = torch.zeros(20, 40)
    mask[0:10, 20:30] = 1  # the box's top-left quarter
    cover = patch_cover(mask, (0, 20, 20, 40), 20, 10)
    torch.testing.assert_close(cover, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # the whole frame letterboxed to 40 px: 10 px bars above and below, lesion in row 1 of the 4 x 4 patch grid
    cover = patch_cover(mask, (0, 0, 20, 40), 40, 10)
    assert cover.shape == (4, 4)
    assert cover[1, 2] == 1.0 and cover.sum() == 1.0


def test_image_row_counts_the_selected_lesion_tokens_by_hand():
    prefix = 1
    content = torch.tensor([True, True, True, False])  # 2 x 2 patches, the last on the black border
    cover = torch.tensor([0.5, 0.0, 0.0, 0.0])  # a lesion on patch 0
    # 2 layers x 1 head x k 3; index 0 is the CLS token
    indices = torch.tensor([[[1, 2, 0]], [[1, 4, 3]]])
    attn = torch.tensor([[[[0.6, 0.4, 0.0]]], [[[0.2, 0.3, 0.5]]]])  # (L, H, P 1, k)
    row = image_row("x", indices, prefix, content, {"MA": cover, "HE": torch.zeros(4)}, attn)
    assert "HE" not in row  # no lesion of that type on the image
    ma = row["MA"]
    # patch tokens selected: layer 0 -> patches 0, 1; layer 1 -> patches 0, 3, 2  (5 in all, 2 on patch 0)
    assert ma["patch_share"] == 0.25 and np.isclose(ma["selected_share"], 2 / 5)
    assert np.allclose(ma["per_layer"], [1 / 2, 1 / 3])
    # within the content: patch 3 is excluded on both sides -> 2 of 4 selected, lesion 1 of 3 patches
    assert np.isclose(ma["content_selected_share"], 2 / 4) and np.isclose(ma["content_patch_share"], 1 / 3)
    assert ma["recall"] == 1.0
    assert np.isclose(ma["attention_share"], (0.6 + 0.2) / 2.0)
    assert np.isclose(row["prefix_share"], 1 / 6) and np.isclose(row["selected_on_content"], 4 / 5)


def test_content_patches_are_the_bright_ones():
    hr = torch.zeros(3, 8, 8, dtype=torch.uint8)
    hr[:, :4, :] = 200  # top half bright
    hr[0, 4:6, 0:4] = 200  # half of the bottom-left patch bright: not "mostly"
    assert content_patches(hr, 4).tolist() == [True, True, False, False]


def test_bootstrap_ratio_is_the_ratio_of_means_inside_its_interval():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.05, 0.2, 50)
    sel = base * 1.5 + rng.normal(0, 0.01, 50)
    e, lo, hi = bootstrap_ratio(sel, base)
    assert np.isclose(e, sel.mean() / base.mean()) and lo < e < hi and lo > 1.3


def test_table_lists_every_lesion_type_found():
    row = image_row("x", torch.tensor([[[1, 2]]]), 1, torch.ones(4, dtype=torch.bool),
                    {"CALC": torch.tensor([1.0, 0, 0, 0])})  # fmt: skip
    text = table({"224": {"rows": [row, row]}}, ["CALC", "CIRC"], "breast")
    assert "| 224 | CALC | 2 | 25.00 | 50.00 | 2.00" in text and "CIRC" not in text and "(breast)" in text


def test_write_keeps_every_row_and_heads_the_table_with_the_command(tmp_path):
    import json

    from fptplus.bench.lesions import write

    row = image_row(
        "x", torch.tensor([[[1, 2]]]), 1, torch.ones(4, dtype=torch.bool), {"MA": torch.tensor([1.0, 0, 0, 0])}
    )
    results = {"224": {"rows": [row], "layers": [11], "seconds": 1.0, "run": None}}
    text = write(results, tmp_path / "out", "lesions.py --sizes 224", ["MA"], "retina", "vit_x")
    assert json.loads((tmp_path / "out" / "lesions.json").read_text()) == results
    assert (tmp_path / "out" / "lesions.md").read_text() == text
    assert (
        text.startswith("Command: `lesions.py --sizes 224`") and "fused layers [11]" in text and "| 224 | MA |" in text
    )


def test_measure_all_runs_each_selector_at_each_size_and_labels_them():
    """`--importance mean random`: one selection per (size, selector), labelled, the selector recorded; the random
    ranking keeps other tokens than the mean rule on the same image."""
    from fptplus.bench.lesions import measure_all

    torch.manual_seed(0)
    rgb = torch.zeros(3, 60, 90, dtype=torch.uint8)
    rgb[:, 5:55, 20:70] = torch.randint(40, 255, (3, 50, 50), dtype=torch.uint8)  # content on a black frame
    mask = torch.zeros(60, 90)
    mask[20:30, 30:40] = 1

    results = measure_all("vit_small_patch14_dinov2", [56], [], None, 0, lambda: [("a", rgb, {"MA": mask})],
                          log=lambda _: None, importance=("mean", "random"))  # fmt: skip
    assert list(results) == ["56", "56 random"] and torch.is_grad_enabled()  # no global state left behind
    assert [r["importance"] for r in results.values()] == ["mean", "random"]
    assert {r["engine"] for r in results.values()} == {"torch"}
    mean, rand = (results[k]["rows"][0]["MA"]["per_layer"] for k in results)
    assert len(mean) == len(rand) == 6 and mean != rand


@pytest.mark.skipif(not (importlib.util.find_spec("openvino") and importlib.util.find_spec("onnxscript")),
                    reason="needs openvino and onnxscript")  # fmt: skip
def test_an_exported_engine_measures_what_pytorch_measures(tmp_path, monkeypatch):
    """`--engine openvino` (verified on the first image) gives PyTorch's selection, so the same shares; with `auto`
    each selector gets its own choice (the random ranking's graph does not export: PyTorch runs it)."""
    from fptplus import engines
    from fptplus.bench.lesions import measure_all

    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(engines.ENGINE_ENV, raising=False)
    monkeypatch.setattr(engines, "RUNTIMES", ("openvino",))
    torch.manual_seed(1)
    rgb = torch.zeros(3, 60, 90, dtype=torch.uint8)
    rgb[:, 5:55, 20:70] = torch.randint(40, 255, (3, 50, 50), dtype=torch.uint8)
    mask = torch.zeros(60, 90)
    mask[20:30, 30:40] = 1
    images = [("a", rgb, {"MA": mask}), ("b", rgb.flip(-1), {"MA": mask.flip(-1)})]
    lines = []
    got = {e: measure_all("vit_small_patch14_dinov2", [56], [], None, 0, lambda: images, log=lines.append, engine=e)
           for e in ("torch", "openvino")}  # fmt: skip
    assert any("engine: openvino (verified against PyTorch on 1 images" in x for x in lines)
    for a, b in zip(got["torch"]["56"]["rows"], got["openvino"]["56"]["rows"], strict=True):
        assert a["MA"]["per_layer"] == pytest.approx(b["MA"]["per_layer"], abs=1e-3)
    auto = measure_all("vit_small_patch14_dinov2", [56], [], None, 0, lambda: images, log=lines.append,
                       importance=("mean", "random", "cls"), engine="auto")  # fmt: skip
    assert [r["engine"] for r in auto.values()] == ["openvino", "torch", "openvino"]
