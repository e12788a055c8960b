"""The FPT/FPT+ model end to end on tiny ViTs: online == pre-extracted, frozen LPM, shapes, ablations, errors."""

from __future__ import annotations

import pytest
import torch

from fptplus.errors import ConfigError
from fptplus.lpm import LPMFeatures
from fptplus.model import FPTConfig, FPTModel, build_fpt

from conftest import TINY, build_tiny, images, tiny_config


def test_online_equals_preextracted(tiny_model):
    lpm_x, side_x = images(3, 64), images(3, 32, seed=1)
    feats = tiny_model.extract(lpm_x)
    stored = LPMFeatures(feats.keys.clone(), feats.values.clone(), feats.indices.clone())
    tiny_model.eval()
    assert torch.equal(tiny_model(side_x, lpm_x=lpm_x), tiny_model(side_x, features=stored))
    tiny_model.train()  # dropout on: the same RNG state gives the same outputs
    torch.manual_seed(7)
    online = tiny_model(side_x, lpm_x=lpm_x)
    torch.manual_seed(7)
    offline = tiny_model(side_x, features=stored)
    assert torch.equal(online, offline)
    torch.manual_seed(8)
    assert not torch.equal(online, tiny_model(side_x, features=stored))  # dropout really is active


def test_store_mode_model_without_lpm_gives_same_outputs(tiny_model):
    trainable_only = build_tiny(with_lpm=False)
    assert trainable_only.lpm is None
    trainable_only.load_state_dict({k: v for k, v in tiny_model.state_dict().items() if not k.startswith("lpm.")})
    lpm_x, side_x = images(2, 64), images(2, 32, seed=1)
    tiny_model.eval(), trainable_only.eval()
    feats = tiny_model.extract(lpm_x)
    assert torch.equal(trainable_only(side_x, features=feats), tiny_model(side_x, lpm_x=lpm_x))
    assert trainable_only.param_count() == tiny_model.param_count()
    with pytest.raises(ConfigError, match="without its LPM"):
        trainable_only(side_x, lpm_x=lpm_x)


def test_training_step_leaves_lpm_untouched(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.lpm.state_dict().items()}
    trainable_before = {n: p.detach().clone() for n, p in tiny_model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(tiny_model.parameters(), lr=1e-2, weight_decay=0.1)  # every parameter offered
    tiny_model.train()
    for step in range(2):
        logits = tiny_model(images(3, 32, seed=step), lpm_x=images(3, 64, seed=10 + step))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2]))
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in tiny_model.lpm.parameters())
        opt.step()
    after = tiny_model.lpm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not tiny_model.lpm.training
    changed = {
        n for n, p in tiny_model.named_parameters() if p.requires_grad and not torch.equal(p, trainable_before[n])
    }
    assert {n for n in trainable_before if n.startswith("fusion.")} <= changed
    assert "side.vit.head.weight" in changed and "side.vit.blocks.0.attn.qkv.weight" in changed
    assert not any(n.startswith("lpm.") for n in trainable_before)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "name,lpm_size,side_size,overrides",
    [
        ("vit_base_patch16_224", (64, 48), (32, 16), {}),
        ("vit_base_patch16_224.dino", 64, 32, {}),
        ("vit_large_patch16_224", 64, 32, dict(embed_dim=1024, num_heads=16)),
        ("vit_small_patch14_dinov2", (56, 42), 28, {}),
    ],
)
def test_shapes_across_backbones(batch, name, lpm_size, side_size, overrides):
    cfg = tiny_config(backbone=name, img_size=lpm_size, side_img_size=side_size)
    model = build_tiny(cfg, **overrides)
    spec = model.spec
    lpm_x, side_x = images(batch, lpm_size), images(batch, side_size, seed=1)
    out = model.forward_details(side_x, lpm_x=lpm_x, return_attn=True)
    N = spec.num_tokens
    k = int(0.2 * N)
    d = spec.embed_dim // spec.num_heads
    assert out["features"].keys.shape == (batch, 2, spec.num_heads, k, d)
    assert out["features"].indices.max() < N
    assert out["fusion"].prompts.shape == (batch, 2, 4, spec.embed_dim // 2)
    assert out["logits"].shape == (batch, 3) and torch.isfinite(out["logits"]).all()
    if "dinov2" in name:
        assert spec.patch_size == (14, 14)
        assert hasattr(model.lpm.vit.blocks[0].ls1, "gamma")  # LayerScale


def test_fpt_config_is_the_same_code_path():
    cfg = FPTConfig.fpt(backbone="vit_base_patch16_224", img_size=64, side_img_size=32, reduction=2, num_prompts=4)
    model = build_fpt(cfg, **{**TINY, "depth": 3})
    assert model.plan.lpm_layers == (0, 1, 2) and model.plan.side_depth == 3
    assert model.fusion.prompts.shape == (3, 4, 16) and isinstance(model.fusion.norm, torch.nn.Identity)
    assert model(images(2, 32), lpm_x=images(2, 64)).shape == (2, 2)


def test_ablation_switches():
    alone = build_tiny(tiny_config(fused_layers=0))
    assert alone.lpm is None and alone.fusion is None and not alone.uses_lpm
    assert alone(images(2, 32)).shape == (2, 3)
    assert alone.param_count().trainable == alone.param_count().total
    one = build_tiny(tiny_config(fused_layers=1))
    assert one.plan.lpm_layers == (1,) and one.plan.side_blocks == (1,)  # top LPM layer -> top side block
    explicit = build_tiny(tiny_config(fused_layers=(0,)))
    assert explicit.plan.lpm_layers == (0,)
    everything = build_tiny(tiny_config(token_ratio=1.0, num_prompts=7, side_img_size=48))
    out = everything.forward_details(images(1, 48), lpm_x=images(1, 64))
    assert out["features"].keys.shape[3] == 17 and out["fusion"].prompts.shape[2] == 7


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(token_ratio=0.0), "token_ratio"),
        (dict(token_ratio=1.5), "token_ratio"),
        (dict(token_ratio=0.01), "keeps no token"),
        (dict(side_depth=3), "only 2 layers"),
        (dict(fused_layers=5), "only 2 layers"),
        (dict(fused_layers=(0, 1), side_depth=1), "at least as many side blocks"),
        (dict(reduction=3), "not divisible by reduction"),
        (dict(img_size=60), "not a multiple of the patch size"),
        (dict(side_img_size=40), "not a multiple of the patch size"),
        (dict(backbone="vit_nonexistent_patch16"), "unknown timm model name"),
        (dict(num_classes=1), "num_classes"),
        (dict(fusion_dropout=1.0), "fusion_dropout"),
    ],
)
def test_bad_settings(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_tiny(tiny_config(**overrides))


def test_model_is_an_nn_module_with_trainable_parts_only(tiny_model):
    assert isinstance(tiny_model, FPTModel)
    names = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("side.", "fusion.")) for n in names)
