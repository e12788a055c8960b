"""Shared fixtures: tiny randomly initialised ViTs (depth 2, width 32) so every test runs in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

# The suite's preloads run the frozen model in PyTorch (exact comparisons with online forwards; no export per tiny
# model); the onnxruntime engine has its own tests (tests/test_engines.py), which ask for it explicitly.
os.environ.setdefault("FPTPLUS_ENGINE", "torch")

import pytest
import torch

from fptplus.model import FPTConfig, build_fpt

# timm kwargs that shrink a named ViT to a tiny one (same class, same code path).
TINY = dict(depth=2, embed_dim=32, num_heads=4)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"  # ../shared next to the checkout
DINOV2_FILE = SHARED / "weights" / "dinov2_vits14.safetensors"


def tiny_config(**overrides) -> FPTConfig:
    """FPT+ defaults on a tiny ViT-B/16-named backbone: 64 px LPM, 32 px side, 2 fused layers."""
    base = dict(
        backbone="vit_base_patch16_224",
        img_size=64,
        side_img_size=32,
        side_depth=2,
        reduction=2,
        num_prompts=4,
        num_classes=3,
        backbone_kwargs=dict(TINY),
    )
    return FPTConfig(**{**base, **overrides})


def build_tiny(cfg: FPTConfig | None = None, with_lpm: bool = True, **lpm_overrides):
    torch.manual_seed(0)
    return build_fpt(cfg or tiny_config(), with_lpm=with_lpm, **lpm_overrides)


@pytest.fixture
def tiny_model():
    return build_tiny()


def images(batch: int, size, seed: int = 0) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g)


def tiny_cli_args(root: Path) -> list[str]:
    """A 16-image two-class folder and tiny-ViT weights under `root`: the shared `fptplus train` flags of CLI tests."""
    from safetensors.torch import save_file

    from imagegen import class_folders

    data = class_folders(root / "data", {"neg": 8, "pos": 8}, size=(48, 48))
    weights = root / "w.safetensors"
    save_file(build_tiny(tiny_config()).lpm.vit.state_dict(), weights)
    return ["--data", str(data), "--weights", str(weights), "--epochs", "1", "--batch-size", "4",
            "--num-workers", "0", "--bootstrap", "0", "--backbone-kwargs", repr(TINY)]  # fmt: skip
