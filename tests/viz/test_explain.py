"""`fptplus explain` on tiny trained runs: pictures at the right pixels, Fig. 5 profile, refusals, run plots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fptplus.cli import main
from fptplus.methods import get_method
from fptplus.viz.tokens import OUTLINE

from conftest import build_tiny, tiny_cli_args, tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    common = [*tiny_cli_args(root), "--img-size", "64"]
    data = root / "data"
    fpt = ["--side-img-size", "32", "--side-depth", "2", "--reduction", "2", "--num-prompts", "4"]
    assert main(["train", "--out", str(root / "fpt"), *common, *fpt]) == 0
    assert main(["train", "--method", "linear", "--out", str(root / "linear"), *common]) == 0
    return {"fpt": root / "fpt", "linear": root / "linear", "data": data}


def test_training_writes_roc_confusion_and_curves(runs):
    for name in ("roc_test.png", "confusion_test.png", "curves.png"):
        img = np.asarray(Image.open(runs["fpt"] / name).convert("L"))
        assert img.std() > 5, name


def selected(run, image, layer, head):
    """The selected tokens recomputed with the run's own model, as an independent check of the picture."""
    from fptplus.data.decode import load_image_file
    from fptplus.data.views import Views
    from fptplus.trainer.evaluate import load_trained
    from fptplus.trainer.inputs import view_config

    cfg, model, _ = load_trained(run, "best", "online")
    views = Views(view_config(get_method(cfg.method), cfg.model, model.spec, None))
    hr = views.high_res(load_image_file(image).image)
    feats = model.extract(views.lpm_view(hr)[None])
    j = model.plan.lpm_layers.index(layer)
    idx = feats.indices[0, j]
    base = hr.permute(1, 2, 0).numpy()
    return (idx if head is None else idx[head : head + 1]).reshape(-1).tolist(), model.spec, base


@pytest.mark.parametrize("head", [None, 2])
def test_explain_outlines_exactly_the_selected_tokens(runs, tmp_path, head):
    image = runs["data"] / "pos" / "img3.png"
    args = ["explain", str(runs["fpt"]), str(image), "--out", str(tmp_path), "--layer", "1"]
    assert main([*args, "--head", "all" if head is None else str(head)]) == 0
    tag = f"img3_block1_{'all-heads' if head is None else f'head{head}'}"
    tokens = np.asarray(Image.open(tmp_path / f"{tag}_tokens.png").convert("RGB"))
    heat = np.asarray(Image.open(tmp_path / f"{tag}_attention.png").convert("RGB"))
    summary = np.asarray(Image.open(tmp_path / f"{tag}.png").convert("L"))
    assert tokens.shape == (64, 64, 3) and heat.shape == (64, 64, 3) and summary.std() > 5
    indices, spec, base = selected(runs["fpt"], image, 1, head)
    cells = {t - spec.num_prefix_tokens for t in indices if t >= spec.num_prefix_tokens}
    gh, gw = spec.grid_size
    for cell in range(gh * gw):
        r, c = divmod(cell, gw)
        corner = tokens[r * 16, c * 16]
        drawn = not np.array_equal(corner, base[r * 16, c * 16])
        assert drawn == (cell in cells), cell  # an outline exactly where a token was selected
        if head is not None and drawn:
            assert tuple(int(v) for v in corner) == OUTLINE


def test_prompt_attention_profile(runs, tmp_path, capsys):
    assert main(["explain", str(runs["fpt"]), "--prompt-attention", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "LPM block   0" in out and "LPM block   1" in out  # 0-based, as --layer and fused_layers
    csv_text = (runs["fpt"] / "explain" / "prompt_attention_test.csv").read_text().splitlines()
    assert csv_text[0] == "side_block,lpm_block,mean_attention_on_prompts" and len(csv_text) == 3
    values = [float(line.split(",")[2]) for line in csv_text[1:]]
    assert all(0 < v < 1 for v in values)
    assert np.asarray(Image.open(runs["fpt"] / "explain" / "prompt_attention_test.png").convert("L")).std() > 5
    elsewhere = tmp_path / "figs"
    assert main(["explain", str(runs["fpt"]), "--prompt-attention", "--split", "val", "--out", str(elsewhere)]) == 0
    assert (elsewhere / "prompt_attention_val.csv").exists() and (elsewhere / "prompt_attention_val.png").exists()
    assert not (runs["fpt"] / "explain" / "prompt_attention_val.csv").exists()  # --out is honoured


def test_explain_refuses_non_fpt_runs_and_bad_layers(runs, capsys):
    image = str(runs["data"] / "neg" / "img0.png")
    assert main(["explain", str(runs["linear"]), image]) == 2
    assert "is a linear run" in capsys.readouterr().err
    assert main(["explain", str(runs["fpt"]), image, "--layer", "5"]) == 2
    assert "not fused" in capsys.readouterr().err
    assert main(["explain", str(runs["fpt"]), image, "--head", "9"]) == 2
    assert "head must be in 0..3" in capsys.readouterr().err


def test_probe_matches_explicit_attention():
    """The Fig. 5 probe's number equals attention computed by hand from the block's q/k."""
    from fptplus.viz.profile import PromptAttentionProbe

    model = build_tiny(tiny_config(num_classes=2)).eval()
    side = model.side
    block = side.vit.blocks[1]
    probe = PromptAttentionProbe([block], num_prompts=3)
    x = torch.randn(2, 5 + 3, side.embed_dim)
    with torch.no_grad():
        block(x)
    probe.close()
    attn = block.attn
    qkv = block.norm1(x) @ attn.qkv.weight.T + attn.qkv.bias
    q, k, _ = qkv.reshape(2, 8, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    probs = (q @ k.transpose(-2, -1) * attn.scale).softmax(-1)[:, :, :5]  # side tokens' rows
    want = probs[..., 5:].sum(-1).mean().item()
    assert probe.means()[0] == pytest.approx(want, rel=1e-5)
