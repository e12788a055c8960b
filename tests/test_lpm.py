"""FrozenLPM: captured K/V vs K/V recomputed from the blocks' own qkv weights; selection; early stop; freezing."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from fptplus.backbones.timm_vit import create_vit
from fptplus.errors import ConfigError
from fptplus.importance import num_selected_tokens
from fptplus.lpm import FrozenLPM, resolve_layers

from conftest import DINOV2_FILE, TINY, images


def tiny_vit(name="vit_base_patch16_224", img=64, **kw):
    torch.manual_seed(0)
    vit = create_vit(name, img, **{**TINY, "depth": 3, **kw})
    with torch.no_grad():  # non-trivial norms so "after q/k normalisation" matters
        for p in vit.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    return vit


def reference_qkv(vit, x, layer):
    """Per-head q, k, v of block `layer`, computed by hand from the block's weights: (B, H, N, d) each."""
    h = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    for blk in vit.blocks[:layer]:
        h = blk(h)
    blk = vit.blocks[layer]
    attn = blk.attn
    y = blk.norm1(h)
    qkv = F.linear(y, attn.qkv.weight, attn.qkv.bias)  # (B, N, 3D)
    B, N, _ = qkv.shape
    q, k, v = (t.reshape(B, N, attn.num_heads, attn.head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    if isinstance(attn.k_norm, torch.nn.LayerNorm):
        q = F.layer_norm(q, (attn.head_dim,), attn.q_norm.weight, attn.q_norm.bias, attn.q_norm.eps)
        k = F.layer_norm(k, (attn.head_dim,), attn.k_norm.weight, attn.k_norm.bias, attn.k_norm.eps)
    return q, k, v


def dense_scores(q, k, mode="mean"):
    attn = ((q.double() @ k.double().transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1)
    return attn.mean(-2) if mode == "mean" else attn[:, :, 0]


@pytest.mark.parametrize("qk_norm", [False, True])
def test_full_kv_capture_equals_recomputation(qk_norm):
    vit = tiny_vit(qk_norm=qk_norm)
    lpm = FrozenLPM(vit, "vit_base_patch16_224", layers=[0, 2], token_ratio=1.0)
    x = images(2, 64)
    feats = lpm(x)
    N = 17
    assert feats.keys.shape == (2, 2, 4, N, 8) and feats.indices.shape == (2, 2, 4, N)
    with torch.no_grad():
        for j, layer in enumerate([0, 2]):
            _, k, v = reference_qkv(vit, x, layer)
            torch.testing.assert_close(feats.keys[:, j], k, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(feats.values[:, j], v, atol=1e-5, rtol=1e-5)
            assert torch.equal(feats.indices[:, j], torch.arange(N).expand(2, 4, N))


@pytest.mark.parametrize("mode", ["mean", "cls"])
@pytest.mark.parametrize("chunk", [3, 17, 100])
def test_selection_is_topk_of_dense_importance(mode, chunk):
    vit = tiny_vit(qk_norm=True)
    lpm = FrozenLPM(vit, "vit_base_patch16_224", layers=2, token_ratio=0.3, importance=mode, chunk_size=chunk)
    x = images(3, 64, seed=1)
    feats = lpm(x)
    k_sel = num_selected_tokens(17, 0.3)
    assert k_sel == 5 and lpm.num_selected == 5
    assert feats.indices.shape == (3, 2, 4, 5)
    with torch.no_grad():
        for j, layer in enumerate([1, 2]):
            q, k, v = reference_qkv(vit, x, layer)
            scores = dense_scores(q, k, mode)  # (B, H, N)
            for b in range(3):
                for h in range(4):
                    idx = feats.indices[b, j, h]
                    assert len(set(idx.tolist())) == 5
                    others = torch.ones(17, dtype=torch.bool)
                    others[idx] = False
                    assert scores[b, h, idx].min() >= scores[b, h, others].max() - 1e-7
                    torch.testing.assert_close(feats.keys[b, j, h], k[b, h, idx], atol=1e-5, rtol=1e-5)
                    torch.testing.assert_close(feats.values[b, j, h], v[b, h, idx], atol=1e-5, rtol=1e-5)


def test_stops_after_deepest_fused_layer():
    vit = tiny_vit()
    calls = []
    for i, blk in enumerate(vit.blocks):
        blk.register_forward_hook(lambda *a, i=i: calls.append(i))
    lpm = FrozenLPM(vit, "vit_base_patch16_224", layers=[0, 1], token_ratio=0.5)
    lpm(images(1, 64))
    assert calls == [0, 1]


def test_frozen_eval_and_hooks_inactive_outside_forward():
    vit = tiny_vit()
    lpm = FrozenLPM(vit, "vit_base_patch16_224", layers=1, token_ratio=0.5)
    assert not any(p.requires_grad for p in lpm.parameters())
    lpm.train()
    assert not lpm.training and not vit.training
    with torch.no_grad():
        vit(images(1, 64))  # plain timm forward: hooks must not stash anything
    assert not lpm._stash and not lpm._selected


def test_fused_attention_kept():
    vit = tiny_vit()
    FrozenLPM(vit, "vit_base_patch16_224", layers=2)
    assert all(blk.attn.fused_attn for blk in vit.blocks)


def test_input_size_checked():
    lpm = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=1)
    with pytest.raises(ConfigError, match="built for"):
        lpm(images(1, 48))


def test_resolve_layers():
    assert resolve_layers(6, 12) == (6, 7, 8, 9, 10, 11)
    assert resolve_layers("all", 3) == (0, 1, 2)
    assert resolve_layers([-1, 0], 4) == (0, 3)
    assert resolve_layers(0, 12) == ()
    for bad in (13, [12], [1, 1], "top"):
        with pytest.raises(ConfigError):
            resolve_layers(bad, 12)


def test_pooled_features_are_the_vits_own_when_the_last_block_is_fused():
    vit = tiny_vit()
    x = images(2, 64)
    top = FrozenLPM(vit, "vit_base_patch16_224", layers=1, token_ratio=0.5)(x)
    with torch.no_grad():
        torch.testing.assert_close(top.cls, vit(x))  # timm's own pooled, normed CLS feature
        tokens = vit.forward_features(x)  # (B, 1 + 16, D): every token after the final norm
        torch.testing.assert_close(top.patch_mean, tokens[:, vit.num_prefix_tokens :].mean(1))
    lower = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=[0, 1], token_ratio=0.5)(x)
    assert lower.cls is None and lower.patch_mean is None


def test_patch_mean_leaves_out_register_tokens():
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_reg4_dinov2", num_classes=0, img_size=56, depth=2, embed_dim=32,
                            num_heads=4).eval()  # fmt: skip
    x = images(2, 56)
    out = FrozenLPM(vit, "vit_small_patch14_reg4_dinov2", layers=1, token_ratio=0.5)(x)
    with torch.no_grad():
        tokens = vit.forward_features(x)  # (B, 1 + 4 + 16, D)
    assert vit.num_prefix_tokens == 5
    torch.testing.assert_close(out.cls, tokens[:, 0])
    torch.testing.assert_close(out.patch_mean, tokens[:, 5:].mean(1))


class Spy:
    """Counts the LPM's fused-kernel answers to SDPA calls."""

    def __init__(self, monkeypatch):
        import fptplus.lpm as lpm_module

        self.calls = 0
        real = lpm_module.attention_with_lse

        def spy(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(lpm_module, "attention_with_lse", spy)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_fused_kernel_selects_what_the_chunked_kernel_selects(monkeypatch, qk_norm):
    x = images(2, 64)
    chunked = FrozenLPM(tiny_vit(qk_norm=qk_norm), "vit_base_patch16_224", layers=[0, 2], token_ratio=0.3,
                        importance_kernel="chunked")(x)  # fmt: skip
    spy = Spy(monkeypatch)
    lpm = FrozenLPM(tiny_vit(qk_norm=qk_norm), "vit_base_patch16_224", layers=[0, 2], token_ratio=0.3,
                    importance_kernel="fused")  # fmt: skip
    fused = lpm(x)
    assert spy.calls == 2  # both fused layers answered their own SDPA call with the lse kernel
    assert torch.equal(fused.indices, chunked.indices)
    assert torch.equal(fused.keys, chunked.keys) and torch.equal(fused.values, chunked.values)
    torch.testing.assert_close(fused.cls, chunked.cls, atol=1e-6, rtol=1e-6)  # the layer outputs are SDPA's
    # the model is untouched afterwards: a plain forward does not go through the LPM
    with torch.no_grad():
        lpm.vit(x)
    assert spy.calls == 2


@pytest.mark.parametrize("qk_norm", [False, True])
def test_dense_kernel_selects_what_the_chunked_kernel_selects(monkeypatch, qk_norm):
    """One materialised attention map per fused layer gives the layer's output and the importance: the same tokens,
    K/V and features as the chunked kernel (which computes the importance in a second, separate pass)."""
    import fptplus.lpm as lpm_module

    x = images(2, 64)
    chunked = FrozenLPM(tiny_vit(qk_norm=qk_norm), "vit_base_patch16_224", layers=[0, 2], token_ratio=0.3,
                        importance_kernel="chunked")(x)  # fmt: skip
    calls = []
    real = lpm_module.dense_attention
    monkeypatch.setattr(lpm_module, "dense_attention", lambda *a: calls.append(1) or real(*a))
    lpm = FrozenLPM(tiny_vit(qk_norm=qk_norm), "vit_base_patch16_224", layers=[0, 2], token_ratio=0.3,
                    importance_kernel="dense")  # fmt: skip
    dense = lpm(x)
    assert len(calls) == 2  # both fused layers answered their own SDPA call from the dense map
    assert torch.equal(dense.indices, chunked.indices)
    # layer 0's output is P·v instead of SDPA's: deeper K/V and features differ by fp32 rounding only
    for name in ("keys", "values", "scores", "cls"):
        torch.testing.assert_close(getattr(dense, name), getattr(chunked, name), atol=1e-5, rtol=1e-5)


def test_dense_attention_is_sdpa_and_the_importance():
    from fptplus.importance import dense_attention, token_importance

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=g) for _ in range(3))
    out, imp = dense_attention(q, k, v, 0.3)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3))
    torch.testing.assert_close(imp, token_importance(q, k, 0.3, chunk_size=7))
    torch.testing.assert_close(imp.sum(-1), torch.ones(2, 3))


def test_eager_attention_falls_back_to_the_chunked_kernel(monkeypatch):
    from fptplus.backbones import set_attention

    x = images(2, 64)
    ref = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=2, token_ratio=0.3, importance_kernel="chunked")(x)
    spy = Spy(monkeypatch)
    lpm = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=2, token_ratio=0.3, importance_kernel="fused")
    restore = set_attention(lpm.vit, "eager")  # timm then never calls SDPA
    got = lpm(x)
    restore()
    assert spy.calls == 0
    assert torch.equal(got.indices, ref.indices)
    torch.testing.assert_close(got.keys, ref.keys)


def test_fused_kernel_refused_where_none_exists():
    with pytest.raises(ConfigError, match="importance_kernel"):
        FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=1, importance_kernel="flash")
    lpm = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=1, token_ratio=0.3, importance_kernel="fused")
    lpm.vit.to("meta")
    with pytest.raises(ConfigError, match="no fused attention kernel on meta"):
        lpm(torch.empty(1, 3, 64, 64, device="meta"))


@pytest.mark.skipif(not DINOV2_FILE.exists(), reason="needs ../shared/weights (real DINOv2 ViT-S/14)")
@pytest.mark.parametrize("size", [224, 518])
def test_fused_kernel_on_real_dinov2(size):
    """Real attention maps (peaked, register-like tokens): the same tokens as the chunked kernel, ties aside."""
    vit = create_vit("vit_small_patch14_dinov2", size, weights=DINOV2_FILE)
    x = images(1, size)
    got = {
        kernel: FrozenLPM(vit, "vit_small_patch14_dinov2", layers=6, importance_kernel=kernel)(x)
        for kernel in ("chunked", "fused", "dense")
    }
    for kernel in ("fused", "dense"):
        same = (got[kernel].indices == got["chunked"].indices).float().mean().item()
        as_sets = (got[kernel].indices.sort(-1).values == got["chunked"].indices.sort(-1).values).float().mean().item()
        assert same > 0.995 and as_sets > 0.999, (kernel, same, as_sets)  # only near-ties may swap places
        torch.testing.assert_close(got[kernel].cls, got["chunked"].cls, atol=1e-5, rtol=1e-5)


def test_fused_kernel_not_used_when_the_model_attends_at_another_scale(monkeypatch):
    """The lse of the model's own call only serves an importance computed at the same scale."""
    x = images(1, 64)
    spy = Spy(monkeypatch)
    lpm = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=1, token_ratio=0.3, importance_kernel="fused")
    lpm._scales = {layer: s * 0.5 for layer, s in lpm._scales.items()}  # what a family reporting 0.5·d^-½ would do
    got = lpm(x)
    assert spy.calls == 0
    ref = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=1, token_ratio=0.3, importance_kernel="chunked")
    ref._scales = dict(lpm._scales)
    assert torch.equal(got.indices, ref(x).indices)


def test_auto_kernel_is_chunked_on_cpu(monkeypatch):
    """On CPU both kernels cost the same (benchmarks/README.md): "auto" keeps the chunked one there."""
    spy = Spy(monkeypatch)
    FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=2, token_ratio=0.3)(images(1, 64))
    assert spy.calls == 0


def test_a_fused_kernel_that_disagrees_with_the_chunked_one_is_refused(monkeypatch):
    import fptplus.importance as importance_module
    import fptplus.lpm as lpm_module

    monkeypatch.setattr(lpm_module, "_FUSED_CHECKED", set())
    real = importance_module.fused_importance
    monkeypatch.setattr(importance_module, "fused_importance", lambda q, k, lse, s: real(q, k, lse, s).flip(-1))
    lpm = FrozenLPM(tiny_vit(), "vit_base_patch16_224", layers=1, token_ratio=0.3, importance_kernel="fused")
    with pytest.raises(ConfigError, match=r"fused importance kernel disagrees.*--importance-kernel chunked"):
        lpm(images(1, 64))
    assert not lpm_module._FUSED_CHECKED  # nothing marked as checked
