"""The timm family: creating ViTs by timm name with weights from local files (or the hub), and the errors users see."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from fptplus.backbones.timm_vit import create_vit
from fptplus.errors import ConfigError, WeightsError

from conftest import DINOV2_FILE, TINY


def reference_vit(name="vit_base_patch16_224", img=64, **kw):
    torch.manual_seed(123)
    return timm.create_model(name, pretrained=False, num_classes=0, img_size=img, **{**TINY, **kw})


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt-nested"])
def test_local_file_loads_strictly(tmp_path, fmt):
    ref = reference_vit().eval()
    state = ref.state_dict()
    path = tmp_path / f"w.{fmt.split('-')[0]}"
    if fmt == "safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": state} if fmt == "pt-nested" else state, path)
    vit = create_vit("vit_base_patch16_224", 64, weights=path, **TINY).eval()
    for k, v in ref.state_dict().items():
        assert torch.equal(vit.state_dict()[k], v), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(vit(x), ref(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_file_loads_into_an_fp32_model(tmp_path, dtype):
    ref = reference_vit().eval()
    save_file({k: v.to(dtype) for k, v in ref.state_dict().items()}, tmp_path / "half.safetensors")
    vit = create_vit("vit_base_patch16_224", 64, weights=tmp_path / "half.safetensors", **TINY)
    for k, v in ref.state_dict().items():
        got = vit.state_dict()[k]
        assert got.dtype == torch.float32 and torch.equal(got, v.to(dtype).float()), k


def test_position_embeddings_resampled_for_another_resolution(tmp_path):
    ref = reference_vit(img=64)
    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    vit = create_vit("vit_base_patch16_224", (96, 128), weights=tmp_path / "w.safetensors", **TINY)
    assert vit.pos_embed.shape == (1, 1 + 6 * 8, 32)
    assert torch.equal(vit.pos_embed[:, 0], ref.pos_embed[:, 0])  # class position kept
    assert torch.equal(vit.blocks[1].attn.qkv.weight, ref.blocks[1].attn.qkv.weight)


def test_checkpoint_with_classifier_head_loads_without_it(tmp_path):
    ref = timm.create_model("vit_base_patch16_224", num_classes=10, img_size=64, **TINY)
    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    vit = create_vit("vit_base_patch16_224", 64, weights=tmp_path / "w.safetensors", **TINY)
    assert isinstance(vit.head, torch.nn.Identity)


def test_weight_file_that_does_not_fit(tmp_path):
    other = reference_vit(embed_dim=48)
    save_file(other.state_dict(), tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match=r"other\.safetensors.*does not fit.*shape mismatch"):
        create_vit("vit_base_patch16_224", 64, weights=tmp_path / "other.safetensors", **TINY)
    deeper = reference_vit(depth=3)
    save_file(deeper.state_dict(), tmp_path / "deeper.safetensors")
    with pytest.raises(WeightsError, match=r"unexpected: blocks\.2\."):
        create_vit("vit_base_patch16_224", 64, weights=tmp_path / "deeper.safetensors", **TINY)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_vit("vit_base_patch16_224", 64, weights=tmp_path / "nope.safetensors", **TINY)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match=r"could not read weight file .*bad\.safetensors"):
        create_vit("vit_base_patch16_224", 64, weights=bad, **TINY)
    pickled = tmp_path / "obj.pt"
    torch.save({"model": object()}, pickled)  # not weights-only: refused, never unpickled
    with pytest.raises(WeightsError, match="weights-only"):
        create_vit("vit_base_patch16_224", 64, weights=pickled, **TINY)


def test_bad_names_and_sizes():
    with pytest.raises(ConfigError, match=r"unknown timm model name 'vit_bse_patch16_224'.*vit_base_patch16_224"):
        create_vit("vit_bse_patch16_224", 64)
    with pytest.raises(ConfigError, match=r"resnet18.*fptplus needs a ViT"):
        create_vit("resnet18", 64)
    with pytest.raises(ConfigError, match="Eva"):
        create_vit("eva02_tiny_patch14_224", 224)
    with pytest.raises(ConfigError, match=r"500x500 is not a multiple of the patch size 16.*496 or 512"):
        create_vit("vit_base_patch16_224", 500, device="meta")
    with pytest.raises(ConfigError, match=r"patch size 14.*504 or 518"):
        create_vit("vit_small_patch14_dinov2", 512, device="meta")


def test_unreachable_hub_gives_clear_error():
    code = "from fptplus import create_vit\ncreate_vit('vit_base_patch16_224', 64, weights='hub', depth=1)\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "WeightsError" in proc.stderr
    assert "could not fetch pretrained weights for 'vit_base_patch16_224'" in proc.stderr
    assert "--weights PATH" in proc.stderr


@pytest.mark.skipif(not DINOV2_FILE.is_file(), reason="shared DINOv2 ViT-S/14 weights not available")
def test_real_dinov2_weights():
    state = load_file(DINOV2_FILE)
    ref = timm.create_model("vit_small_patch14_dinov2", num_classes=0, img_size=518)
    ref.load_state_dict(state, strict=True)
    vit = create_vit("vit_small_patch14_dinov2", 518, weights=DINOV2_FILE)
    for k, v in ref.state_dict().items():
        assert torch.equal(vit.state_dict()[k], v), k
    assert vit.blocks[0].ls1.gamma.abs().mean() > 0  # LayerScale present and loaded
    small = create_vit("vit_small_patch14_dinov2", 224, weights=DINOV2_FILE)  # resampled 37x37 -> 16x16
    assert small.pos_embed.shape == (1, 1 + 16 * 16, 384)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.isfinite(small(x)).all()


@pytest.mark.skipif(not DINOV2_FILE.exists(), reason="needs ../shared/weights (real DINOv2 ViT-S/14)")
def test_builtin_weights_resolve_from_the_cache(tmp_path, monkeypatch):
    """builtin:dinov2_vits14 reads the converted file from the fptplus cache (filled here, as a first use would)."""
    import shutil

    from fptplus.backbones import create_backbone
    from fptplus.pretrained import FILE_NAME

    shutil.copy(DINOV2_FILE, tmp_path / FILE_NAME)
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path))
    vit = create_backbone("vit_small_patch14_dinov2", 224, "builtin:dinov2_vits14")
    ref = create_vit("vit_small_patch14_dinov2", 224, weights=DINOV2_FILE)
    assert all(torch.equal(a, b) for a, b in zip(vit.state_dict().values(), ref.state_dict().values(), strict=True))


def dinov2_interpolate_pos_encoding(pos_embed, w, h, patch_size):
    """The FPT+ authors' rule as their code (DINOv2's `interpolate_pos_encoding`) writes it, re-implemented here."""
    import math

    import torch.nn.functional as F

    npatch = (w // patch_size) * (h // patch_size)
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = w // patch_size + 0.1, h // patch_size + 0.1
    M = int(math.sqrt(N))
    patch_pos_embed = F.interpolate(patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2),
                                    scale_factor=(w0 / M, h0 / M), mode="bicubic")  # fmt: skip
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


@pytest.mark.skipif(not DINOV2_FILE.exists(), reason="needs ../shared/weights (real DINOv2 ViT-S/14)")
@pytest.mark.parametrize("size", [224, 448])
def test_the_authors_position_embedding_resampling_is_theirs(size):
    from fptplus.weights import read_state_dict

    original = read_state_dict(DINOV2_FILE)["pos_embed"]  # (1, 1 + 37², 384): DINOv2 at 518 px
    authors = create_vit("vit_small_patch14_dinov2", size, DINOV2_FILE, pos_embed_resize="authors")
    want = dinov2_interpolate_pos_encoding(original.float(), size, size, 14)
    torch.testing.assert_close(authors.pos_embed.detach(), want, atol=1e-6, rtol=1e-6)
    timm_way = create_vit("vit_small_patch14_dinov2", size, DINOV2_FILE)
    assert (authors.pos_embed - timm_way.pos_embed).abs().max() > 1e-3  # the two rules differ
    with pytest.raises(ConfigError, match="square"):
        create_vit("vit_small_patch14_dinov2", (224, 280), DINOV2_FILE, pos_embed_resize="authors")
