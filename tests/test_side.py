"""The side ViT: timm's own classes, prompts appended before a block and dropped after it."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import Block, VisionTransformer

from fptplus.errors import ConfigError
from fptplus.side import SideViT


def make(img=32, depth=3):
    torch.manual_seed(0)
    return SideViT(img, 16, embed_dim=16, depth=depth, num_heads=4, num_classes=3).eval()


def test_built_from_timm():
    side = make()
    assert isinstance(side.vit, VisionTransformer)
    assert all(type(b) is Block for b in side.vit.blocks)
    assert side.depth == 3 and side.embed_dim == 16 and side.vit.blocks[0].attn.num_heads == 4


def test_without_prompts_equals_plain_timm_forward():
    side = make()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(side(x), side.vit(x))


def test_prompts_join_one_block_and_leave():
    side = make()
    seen = []
    for blk in side.vit.blocks:
        blk.register_forward_hook(lambda m, args, out: seen.append((args[0].shape[1], out.shape[1])))
    x = torch.randn(2, 3, 32, 32)
    p = torch.randn(2, 5, 16)
    with torch.no_grad():
        with_p = side(x, [None, p, None])
        without = side(x)
    assert seen[:3] == [(5, 5), (10, 10), (5, 5)]  # 4 patches + CLS, + 5 prompts only in block 1
    assert with_p.shape == (2, 3)
    assert not torch.allclose(with_p, without)


def test_non_square_and_errors():
    side = make(img=(32, 48))
    assert side(torch.randn(1, 3, 32, 48)).shape == (1, 3)
    with pytest.raises(ConfigError, match="expects"):
        side(torch.randn(1, 3, 32, 32))
    with pytest.raises(ConfigError, match="3 blocks but got prompts for 2"):
        side(torch.randn(1, 3, 32, 48), [None, None])
    with pytest.raises(ConfigError, match="not a multiple of the patch size"):
        SideViT(40, 16, 16, 2, 4, 2)
    with pytest.raises(ConfigError, match="not divisible by the 4 heads"):
        SideViT(32, 16, 18, 2, 4, 2)
