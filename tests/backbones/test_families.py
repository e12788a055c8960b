"""Every method on every backbone family (tiny random models): build, forward, backward, only the method's
parameters learn, and FPT's stored-feature input gives the online output."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fptplus.backbones import families, family_of, lpm_spec
from fptplus.errors import ConfigError
from fptplus.methods import available_methods, get_method

from conftest import TINY

pytest.importorskip("transformers")

FAMILIES = {  # backbone, tiny overrides, LPM size, side size
    "timm": ("vit_base_patch16_224", TINY, 64, 32),
    "hf-vit": ("hf:vit", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              patch_size=16), 64, 32),
    "hf-dinov2": ("hf:dinov2", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=14), 56, 28),
}  # fmt: skip


def config(method: str, family: str):
    backbone, kwargs, size, side = FAMILIES[family]
    extra = {}
    if method.startswith("fpt"):
        extra = dict(side_img_size=side, reduction=2, num_prompts=4)
        extra.update({"side_depth": 2} if method == "fpt_plus" else {})
    return get_method(method).make_config(backbone=backbone, backbone_kwargs=dict(kwargs), img_size=size, **extra)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", available_methods())
def test_every_method_trains_on_every_family(method, family):
    m = get_method(method)
    if method == "knn":
        pytest.skip("the kNN probe has no parameters to train (its fitted bank: tests/trainer/test_probe_run.py)")
    cfg = config(method, family)
    torch.manual_seed(0)
    model = m.build(cfg, source="online")
    batch = m.inputs.example_batch(model, cfg, 2, "cpu", "online")
    args, kwargs = model.batch_args(batch)
    logits = model(*args, **kwargs)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    count = model.param_count()
    assert count.trainable == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    if method in ("attn_tune",):  # the family names its attention parameters
        assert all(family_of(cfg.backbone).is_attention_param(n) or n.startswith("head.") for n in trainable)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_stored_features_give_the_online_output(family):
    cfg = config("fpt_plus", family)
    torch.manual_seed(0)
    model = get_method("fpt_plus").build(cfg, source="online").eval()
    batch = get_method("fpt_plus").inputs.example_batch(model, cfg, 2, "cpu", "online")
    with torch.no_grad():
        feats = model.extract(batch["lpm"])
        torch.testing.assert_close(model(batch["side"], features=feats), model(batch["side"], lpm_x=batch["lpm"]))
    spec = lpm_spec(cfg.backbone, cfg.img_size, cfg.backbone_kwargs)
    k = int(cfg.token_ratio * spec.num_tokens)
    assert feats.keys.shape == (2, 2, spec.num_heads, k, spec.head_dim)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_meta_validation_reads_no_weights(family):
    cfg = config("lora", family)
    model = get_method("lora").validate(dataclasses.replace(cfg, weights="none"))
    assert all(p.is_meta for p in model.parameters())


def test_names_pick_their_family():
    assert type(family_of("vit_base_patch16_224")).__name__ == "TimmFamily"
    assert type(family_of("hf:/models/rad-dino")).__name__ == "HFFamily"
    assert [type(f).__name__ for f in families()][-1] == "TimmFamily"  # the prefix-less fallback is asked last
    with pytest.raises(ConfigError, match="non-empty name"):
        family_of("")
