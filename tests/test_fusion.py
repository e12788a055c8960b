"""Fusion modules against a per-layer, per-head loop written from the paper's equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fptplus.errors import ConfigError
from fptplus.fusion import FineGrainedFusion

B, L, H, K, D, DS, P = 2, 3, 4, 7, 32, 8, 5


def kv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, H, K, D // H, generator=g), torch.randn(B, L, H, K, D // H, generator=g)


def make(**kw):
    torch.manual_seed(0)
    fusion = FineGrainedFusion(L, D, H, DS, num_prompts=P, dropout=0.0, **kw)
    with torch.no_grad():  # large prompts and a non-trivial norm so every term matters
        fusion.prompts.normal_()
        if isinstance(fusion.norm, torch.nn.LayerNorm):
            fusion.norm.weight.uniform_(0.5, 1.5)
            fusion.norm.bias.normal_()
    return fusion.eval()


def reference(fusion, keys, values):
    d = D // H
    out = torch.empty(B, L, P, DS)
    for layer in range(L):
        p = fusion.prompts[layer]  # (P, D_p)
        base = fusion.in_proj(p) if isinstance(fusion.in_proj, torch.nn.Linear) else p  # (P, D)
        q = fusion.norm(base) if isinstance(fusion.norm, torch.nn.LayerNorm) else base
        for b in range(B):
            heads = []
            for h in range(H):
                qh = q[:, h * d : (h + 1) * d]  # (P, d)
                w = torch.softmax(qh @ keys[b, layer, h].T / d**0.5, dim=-1)  # (P, K)
                heads.append(w @ values[b, layer, h])  # (P, d)
            ctx = torch.cat(heads, dim=-1)  # (P, D)
            if p.shape[-1] == D:  # FPT+: f_out(ctx + p), as the authors' FPT+ code
                out[b, layer] = F.linear(ctx + p, fusion.out_proj.weight, fusion.out_proj.bias)
            else:  # FPT: f_out(ctx) + p, eq. (7) as written (p has the side width)
                out[b, layer] = F.linear(ctx, fusion.out_proj.weight, fusion.out_proj.bias) + p
    return out


@pytest.mark.parametrize("variant", ["fpt_plus", "fpt"])
def test_matches_reference(variant):
    kw = {} if variant == "fpt_plus" else dict(prompt_dim=DS, prompt_norm=False)
    fusion = make(**kw)
    keys, values = kv()
    res = fusion(keys, values, return_attn=True)
    assert res.prompts.shape == (B, L, P, DS)
    assert res.attn.shape == (B, L, H, P, K)
    torch.testing.assert_close(res.attn.sum(-1), torch.ones(B, L, H, P))
    with torch.no_grad():
        torch.testing.assert_close(res.prompts, reference(fusion, keys, values), atol=1e-5, rtol=1e-5)


def test_structure_fpt_plus_vs_fpt():
    plus = FineGrainedFusion(L, D, H, DS, num_prompts=P)
    assert plus.prompts.shape == (L, P, D)
    assert isinstance(plus.norm, torch.nn.LayerNorm) and isinstance(plus.in_proj, torch.nn.Identity)
    linears = [m for m in plus.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].weight.shape == (DS, D)  # ONE shared out-projector
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in plus.modules()) == 1  # one shared LayerNorm
    fpt = FineGrainedFusion(L, D, H, DS, num_prompts=P, prompt_dim=DS, prompt_norm=False)
    assert fpt.prompts.shape == (L, P, DS)
    assert fpt.in_proj.weight.shape == (D, DS) and isinstance(fpt.norm, torch.nn.Identity)


def test_prompt_init_scale():
    torch.manual_seed(0)
    fusion = FineGrainedFusion(6, 768, 12, 96, num_prompts=16)
    assert 0.9e-6 < fusion.prompts.std().item() < 1.1e-6
    assert abs(fusion.prompts.mean().item()) < 1e-7


def test_dropout_knob():
    keys, values = kv()
    fusion = make()
    fusion.dropout.p = 0.5
    fusion.train()
    torch.manual_seed(1)
    a = fusion(keys, values).prompts
    assert (a == 0).float().mean() > 0.3  # about half dropped
    fusion.eval()
    e = fusion(keys, values).prompts
    kept = a != 0
    torch.testing.assert_close(a[kept], 2 * e[kept])  # inverted dropout scaling
    fusion.dropout.p = 0.0
    fusion.train()
    torch.testing.assert_close(fusion(keys, values).prompts, e)


def test_mismatched_features_refused():
    fusion = make()
    keys, values = kv()
    with pytest.raises(ConfigError, match="do not fit fusion modules"):
        fusion(keys[:, :2], values[:, :2])
