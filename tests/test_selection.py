"""The selector seam and stores sorted by importance: a store built at ratio K serves every r <= K as its first rows,
exactly what a store built at r holds; the ablation selectors do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fptplus.data.sources import load_index
from fptplus.data.views import Views
from fptplus.errors import ConfigError
from fptplus.importance import num_selected_tokens, token_importance
from fptplus.lpm import FrozenLPM
from fptplus.selection import get_selector, selector_names
from fptplus.store import FeatureStore, StoreError
from fptplus.store.dataset import StoreDataset
from fptplus.store.plan import store_spec
from imagegen import class_folders
from storetools import build, store_cfg

from conftest import TINY, build_tiny, images


def tiny_vit():
    from fptplus.backbones.timm_vit import create_vit

    torch.manual_seed(0)
    return create_vit("vit_base_patch16_224", 64, **TINY)


def test_the_registry_names_every_selector_and_refuses_others():
    assert selector_names() == ("mean", "cls", "random", "all")
    with pytest.raises(ConfigError, match="importance must be one of"):
        get_selector("entropy")


def test_cls_and_random_and_all_select_what_they_say():
    x = images(3, 64)
    cls = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=[0, 1], token_ratio=0.25, importance="cls")(x)
    ref = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=[0, 1], token_ratio=1.0)(x)  # every k, v
    q_free = cls.scores  # (B, L, H, k) descending
    assert torch.all(q_free[..., :-1] >= q_free[..., 1:])
    rnd = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=[0, 1], token_ratio=0.25, importance="random")(x)
    assert torch.equal(rnd.indices[0], rnd.indices[1]) and torch.equal(rnd.indices[1], rnd.indices[2])  # fixed
    assert not torch.equal(rnd.indices[0, 0], rnd.indices[0, 1])  # another draw per layer
    all_ = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=[0, 1], token_ratio=1.0, importance="all")(x)
    assert torch.equal(all_.indices[0, 0, 0], torch.arange(17)) and all_.scores is None
    torch.testing.assert_close(all_.keys, ref.keys)
    with pytest.raises(ConfigError, match="token_ratio 1"):
        FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=[0, 1], token_ratio=0.5, importance="all")


def test_the_cls_rule_is_the_cls_row_of_attention():
    q, k = torch.randn(2, 4, 17, 8), torch.randn(2, 4, 17, 8)
    got = get_selector("cls").scores(q, k, layer=0, scale=8**-0.5, chunk_size=None, lse=None)
    want = torch.softmax((q[:, :, :1] @ k.transpose(-2, -1)) * 8**-0.5, -1)[:, :, 0]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(get_selector("mean").scores(q, k, layer=0, scale=8**-0.5, chunk_size=None, lse=None),
                               token_importance(q, k, 8**-0.5))  # fmt: skip


def test_a_store_at_a_higher_ratio_serves_a_lower_one_exactly(tmp_path):
    index = load_index(class_folders(tmp_path / "data", {"neg": 4, "pos": 4}), seed=0)
    build(index, tmp_path / "big", dtype="float32", store_ratio=0.5)
    build(index, tmp_path / "small", dtype="float32")  # the model's own ratio, 0.2
    big, small = FeatureStore(tmp_path / "big"), FeatureStore(tmp_path / "small")
    k = num_selected_tokens(17, 0.2)
    assert big.num_selected == num_selected_tokens(17, 0.5) > small.num_selected == k
    for i in range(len(index.samples)):
        assert np.array_equal(big[i]["indices"][..., :k], small[i]["indices"])  # the same tokens, same order
        np.testing.assert_allclose(big[i]["keys"][:, :, :k], small[i]["keys"], atol=1e-6)
    fingerprint = store_spec(store_cfg()).fingerprint
    big.check_compatible(fingerprint, index)  # serves the lower ratio
    views = Views(store_spec(store_cfg()).views)
    model = build_tiny(store_cfg()).eval()
    a = StoreDataset(big, big.usable(), views, train=False, k=k)
    b = StoreDataset(small, small.usable(), views, train=False)
    from fptplus.lpm import LPMFeatures

    for j in range(3):
        x, y = a[j], b[j]
        assert x["keys"].shape == y["keys"].shape
        with torch.no_grad():
            la = model(x["side"][None], features=LPMFeatures(x["keys"][None], x["values"][None], None))
            lb = model(y["side"][None], features=LPMFeatures(y["keys"][None], y["values"][None], None))
        torch.testing.assert_close(la, lb, atol=1e-6, rtol=1e-6)
    with pytest.raises(StoreError, match=r"preload with --store-ratio 0\.8"):
        small.check_compatible(store_spec(store_cfg(token_ratio=0.8)).fingerprint, index)
    assert build(index, tmp_path / "big", dtype="float32").processed == 0  # the lower ratio into it: nothing to do
