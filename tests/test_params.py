"""Parameter accounting on the real-size ViT-B/16 shapes (meta device: no weights, no memory)."""

from __future__ import annotations

import pytest

from fptplus.model import FPTConfig, build_fpt
from fptplus.params import count_parameters


def vit_b16_counts(lpm_tokens=1025, side_tokens=65, side_depth=6, layers=6, prompts=16, prompt_dim=768, classes=2):
    """Independent closed-form counts for ViT-B/16 (D=768) and an FPT side network of width 96."""
    D, Ds = 768, 96

    def block(w):  # 2 LayerNorms + qkv + proj + 2-layer MLP (ratio 4), all with biases
        return 2 * 2 * w + (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w)

    lpm = 12 * block(D) + (3 * 16 * 16 * D + D) + D + lpm_tokens * D + 2 * D
    side = side_depth * block(Ds) + (3 * 16 * 16 * Ds + Ds) + Ds + side_tokens * Ds + 2 * Ds + (Ds * classes + classes)
    fusion = layers * prompts * prompt_dim + (D * Ds + Ds)
    fusion += 2 * D if prompt_dim == D else (Ds * D + D)  # LayerNorm (FPT+) or in-projector (FPT)
    return side + fusion, lpm + side + fusion


def test_fpt_plus_vit_b16_512():
    model = build_fpt(FPTConfig.fpt_plus(num_classes=2), with_lpm=False, device="meta")
    count = model.param_count()
    trainable, total = vit_b16_counts()
    assert (count.trainable, count.total) == (trainable, total)
    assert abs(count.percent - 1.03) <= 0.02  # paper Table 1
    assert model.spec.num_params == total - trainable


def test_fpt_vit_b16_512():
    model = build_fpt(FPTConfig.fpt(num_classes=2), with_lpm=False, device="meta")
    count = model.param_count()
    assert (count.trainable, count.total) == vit_b16_counts(side_tokens=197, side_depth=12, layers=12, prompt_dim=96)
    assert 1.79 <= count.percent <= 1.84  # paper: 1.81 (FPT)


@pytest.mark.parametrize("prompts,paper", [(4, 0.96), (8, 0.99), (16, 1.03), (32, 1.11), (64, 1.28), (128, 1.61)])
def test_prompt_count_sweep_matches_table4(prompts, paper):
    model = build_fpt(FPTConfig.fpt_plus(num_prompts=prompts), with_lpm=False, device="meta")
    assert abs(model.param_count().percent - paper) <= 0.01


def test_count_parameters_counts_shared_once():
    import torch

    lin = torch.nn.Linear(4, 4)
    seq = torch.nn.Sequential(lin, lin)
    lin.bias.requires_grad_(False)
    c = count_parameters(seq, extra_frozen=10)
    assert (c.trainable, c.total) == (16, 30)
