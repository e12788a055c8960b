"""The transformers family: the same weights in timm and transformers form give the same features, selected
indices and K/V (at the checkpoint's resolution and resampled); loading, stores and errors of hf: backbones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from fptplus.backbones import create_backbone, lpm_spec
from fptplus.backbones.timm_vit import create_vit
from fptplus.data.decode import load_image_file
from fptplus.data.sources import load_index
from fptplus.data.views import Views
from fptplus.errors import ConfigError, WeightsError
from fptplus.lpm import FrozenLPM
from fptplus.model import FPTConfig, build_fpt
from fptplus.store import FeatureStore, PreloadOptions, preload
from fptplus.store.plan import store_spec
from hf_convert import hf_config, hf_to_timm, timm_to_hf
from imagegen import class_folders

from conftest import DINOV2_FILE, images

transformers = pytest.importorskip("transformers")

KINDS = {  # timm name, tiny timm kwargs, native resolution
    "vit": ("vit_base_patch16_224", dict(depth=2, embed_dim=32, num_heads=4), 64),
    "dinov2": ("vit_small_patch14_dinov2", dict(depth=2, embed_dim=32, num_heads=4), 56),
}


def timm_reference(kind: str):
    name, kwargs, img = KINDS[kind]
    torch.manual_seed(0)
    vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=img, **kwargs)
    with torch.no_grad():  # non-trivial norms and layer scales, so a wrong mapping shows
        for p in vit.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    return vit.eval()


def save_hf_folder(kind: str, timm_state: dict, folder, img: int, heads: int = 4):
    config = hf_config(kind, timm_state, img, heads)
    cls = transformers.ViTModel if kind == "vit" else transformers.Dinov2Model
    model = cls(config, **({"add_pooling_layer": False} if kind == "vit" else {}))
    model.load_state_dict(timm_to_hf(timm_state, kind), strict=True)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return folder


@pytest.fixture(params=sorted(KINDS))
def pair(request, tmp_path):
    """(kind, timm weights file, transformers folder) holding the same tiny random weights."""
    kind = request.param
    state = timm_reference(kind).state_dict()
    save_file(state, tmp_path / "timm.safetensors")
    return kind, tmp_path / "timm.safetensors", save_hf_folder(kind, state, tmp_path / "hf", KINDS[kind][2])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_state_dicts_convert_both_ways(kind):
    state = timm_reference(kind).state_dict()
    back = hf_to_timm(timm_to_hf(state, kind), kind)
    assert sorted(back) == sorted(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("scale", [1, 2], ids=["native", "resampled"])
def test_same_weights_give_the_same_features_indices_and_kv(pair, scale):
    kind, timm_file, folder = pair
    name, kwargs, native = KINDS[kind]
    size = native * scale  # x2: both families resample the position embeddings (timm's own function)
    t = create_vit(name, size, weights=timm_file, **kwargs).eval()
    h = create_backbone(f"hf:{folder}", size, weights="hub").eval()
    x = images(2, size)
    with torch.no_grad():
        torch.testing.assert_close(h(x), t(x), atol=2e-5, rtol=1e-5)  # pooled, final-normed CLS
        a = FrozenLPM(t, name, layers=[0, 1], token_ratio=0.3)(x)
        b = FrozenLPM(h, f"hf:{folder}", layers=[0, 1], token_ratio=0.3)(x)  # "auto": chunked on CPU
    assert torch.equal(a.indices, b.indices)  # the same tokens selected per layer and head
    torch.testing.assert_close(b.keys, a.keys, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(b.values, a.values, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(b.cls, a.cls, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(b.patch_mean, a.patch_mean, atol=2e-5, rtol=1e-5)
    spec_t, spec_h = lpm_spec(name, size, kwargs), lpm_spec(f"hf:{folder}", size)
    for field in ("img_size", "patch_size", "grid_size", "num_prefix_tokens", "depth", "embed_dim", "num_heads"):
        assert getattr(spec_t, field) == getattr(spec_h, field), field
    assert spec_h.mean == (0.5, 0.5, 0.5)  # the folder's preprocessor_config.json


@pytest.mark.skipif(not DINOV2_FILE.exists(), reason="needs ../shared/weights (real DINOv2 ViT-S/14)")
def test_real_dinov2_weights_agree_across_families(tmp_path):
    """The real DINOv2 ViT-S/14 as a transformers folder (518 px) and as timm weights, both read at 224 px."""
    state = load_file(DINOV2_FILE)
    folder = save_hf_folder("dinov2", state, tmp_path / "hf", 518, heads=6)
    cfg = dict(img_size=224, side_img_size=56, token_ratio=0.2, num_classes=2)
    timm_model = build_fpt(FPTConfig(backbone="vit_small_patch14_dinov2", weights=str(DINOV2_FILE), **cfg)).eval()
    hf_model = build_fpt(FPTConfig(backbone=f"hf:{folder}", weights="hub", **cfg)).eval()
    x = images(2, 224)
    with torch.no_grad():
        a, b = timm_model.extract(x), hf_model.extract(x)
    assert (a.indices == b.indices).float().mean() > 0.999  # fp32 sums in another order may swap a near-tie
    torch.testing.assert_close(b.keys, a.keys, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(b.cls, a.cls, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(b.patch_mean, a.patch_mean, atol=1e-3, rtol=1e-4)


def test_eager_and_fused_attention_agree():
    from fptplus.backbones import set_attention

    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=16)
    model = create_backbone("hf:vit", 64, None, **kw).eval()
    x = images(2, 64)
    with torch.no_grad():
        fused = model(x)
        restore = set_attention(model, "eager")
        assert model.model.config._attn_implementation == "eager"
        eager = model(x)
        restore()
    assert model.model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(eager, fused, atol=1e-5, rtol=1e-5)


def test_a_store_of_an_hf_backbone_equals_its_online_features(pair, tmp_path):
    kind, _, folder = pair
    size = KINDS[kind][2]
    data = load_index(class_folders(tmp_path / "data", {"neg": 3, "pos": 3}), seed=0)
    cfg = FPTConfig(backbone=f"hf:{folder}", weights=str(folder), img_size=size, side_img_size=size // 2,
                    side_depth=2, reduction=2, num_prompts=4, num_classes=2)  # fmt: skip
    opts = PreloadOptions(num_workers=0, batch_size=1, dtype="float32")  # batch 1: bit-equal to online
    preload(data, cfg, tmp_path / "store", opts, rank=0, world_size=1, log=lambda *_: None)
    store = FeatureStore(tmp_path / "store")
    assert store.fingerprint["weights"]["source"] == "folder"  # identified by the weights' sha256
    assert store_spec(cfg).views.mean == (0.5, 0.5, 0.5)  # the folder's image processor
    views = Views(store_spec(cfg).views)
    model = build_fpt(cfg).eval()
    for i in range(len(store)):
        hr = views.high_res(load_image_file(data.abspath(data.samples[i])).image)
        with torch.no_grad():
            feats = model.extract(views.lpm_view(hr)[None])
        assert np.array_equal(store[i]["indices"], feats.indices[0].numpy())
        assert np.array_equal(store[i]["keys"], feats.keys[0].numpy())


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="square inputs only"):
        create_backbone("hf:dinov2", (56, 84), None, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        patch_size=14)  # fmt: skip
    with pytest.raises(ConfigError, match="has no field 'depth'"):
        create_backbone("hf:vit", 64, None, depth=2)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match=r"ViTModel .* Dinov2Model"):
        create_backbone(f"hf:{tmp_path / 'bert'}", 64, None)
    with pytest.raises(ConfigError, match="folder or a Hub id"):
        create_backbone("hf:", 64, None)
    timm_state = timm_reference("vit").state_dict()
    save_file(timm_state, tmp_path / "timm.safetensors")  # timm names are not transformers names
    with pytest.raises(WeightsError, match="transformers >= 5 naming"):
        create_backbone("hf:vit", 64, tmp_path / "timm.safetensors", hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, patch_size=16)  # fmt: skip
    with pytest.raises(WeightsError, match="no weights='hub'"):
        create_backbone("hf:vit", 64, "hub")


def test_an_unreachable_hub_repository_is_one_clear_error():
    code = "from fptplus.backbones import lpm_spec\nlpm_spec('hf:google/vit-base-patch16-384', 384)\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "ConfigError" in proc.stderr and "--backbone hf:DIR" in proc.stderr


def test_hf_layers_share_their_attention_pass_with_the_fused_importance(pair, monkeypatch):
    """transformers' SDPA attention reaches the LPM's fused kernel; it selects what the chunked kernel selects."""
    import fptplus.lpm as lpm_module

    kind, _, folder = pair
    size = KINDS[kind][2]
    model = create_backbone(f"hf:{folder}", size, weights="hub").eval()
    x = images(2, size)
    chunked = FrozenLPM(model, f"hf:{folder}", layers=[0, 1], token_ratio=0.3, importance_kernel="chunked")(x)
    calls = []
    real = lpm_module.attention_with_lse
    monkeypatch.setattr(lpm_module, "attention_with_lse", lambda *a, **k: calls.append(1) or real(*a, **k))
    fused = FrozenLPM(model, f"hf:{folder}", layers=[0, 1], token_ratio=0.3, importance_kernel="fused")(x)
    assert len(calls) == 2
    assert torch.equal(fused.indices, chunked.indices)
    torch.testing.assert_close(fused.keys, chunked.keys, atol=0, rtol=0)
