"""`fptplus demo`: the smallest end-to-end FPT+ run (build → extract K/V → check → train a few steps).

It generates a handful of fundus-like images (a reddish disc; positives carry a few dark spots a few pixels
wide), extracts the frozen LPM's selected K/V once, checks that the model gives the same outputs online and
from the extracted features, and trains the side network + fusion modules for a few steps from the features.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .model import FPTConfig, build_fpt
from .weights import create_vit


@dataclass
class DemoConfig:
    backbone: str = "vit_small_patch14_dinov2"
    weights: str | None = None
    img_size: int = 518
    side_img_size: int | None = None  # None: the multiple of the patch size nearest to img_size / 4
    num_images: int = 4
    steps: int = 8
    lr: float = 1e-3
    seed: int = 0


def fundus_like(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n RGB images in [0, 1] (n, 3, size, size) and labels (n,): odd indices carry small dark spots."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    r = (xx**2 + yy**2).sqrt()
    disc = (r < 0.92).float() * (1 - 0.35 * r)  # (size, size) vignetted disc
    base = torch.stack([0.85 * disc, 0.35 * disc, 0.15 * disc])  # (3, size, size) reddish
    imgs, labels = [], []
    for i in range(n):
        img = base * (0.9 + 0.2 * torch.rand(1, generator=g)) + 0.02 * torch.randn(3, size, size, generator=g)
        if i % 2:
            for _ in range(4):
                angle, rad = 2 * math.pi * torch.rand(1, generator=g), 0.7 * torch.rand(1, generator=g)
                cx, cy = rad * torch.cos(angle), rad * torch.sin(angle)
                spot = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() < 3.0 / size * 2  # ~3 px radius
                img[:, spot] = torch.tensor([0.35, 0.05, 0.05])[:, None]
        imgs.append(img.clamp(0, 1))
        labels.append(i % 2)
    return torch.stack(imgs), torch.tensor(labels)


def run_demo(cfg: DemoConfig, log=print) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    side_size = cfg.side_img_size
    if side_size is None:
        patch = create_vit(cfg.backbone, cfg.img_size, device="meta").patch_embed.patch_size[0]
        side_size = patch * max(1, round(cfg.img_size / 4 / patch))
    model_cfg = FPTConfig.fpt_plus(
        backbone=cfg.backbone, weights=cfg.weights, img_size=cfg.img_size, side_img_size=side_size
    )
    t0 = time.perf_counter()
    model = build_fpt(model_cfg)
    spec, params = model.spec, model.param_count()
    log(f"LPM      {spec.name} @ {spec.img_size[0]}x{spec.img_size[1]}, weights: {cfg.weights or 'random init'}")
    log(f"         {spec.depth} layers, width {spec.embed_dim}, {spec.num_heads} heads, N = {spec.num_tokens} tokens")
    log(f"side     {side_size}x{side_size} input, {model.plan.side_depth} blocks, width {model.side.embed_dim}")
    log(f"fused    LPM layers {list(model.plan.lpm_layers)} -> side blocks {list(model.plan.side_blocks)}")
    log(f"params   {params}  (built in {time.perf_counter() - t0:.1f} s)")

    raw, labels = fundus_like(cfg.num_images, cfg.img_size, cfg.seed)
    mean, std = torch.tensor(spec.mean)[:, None, None], torch.tensor(spec.std)[:, None, None]
    lpm_x = (raw - mean) / std  # (n, 3, H, W) high-resolution view
    side_x = F.interpolate(lpm_x, size=side_size, mode="bilinear", antialias=True, align_corners=False)

    t0 = time.perf_counter()
    feats = model.extract(lpm_x)
    extract_s = time.perf_counter() - t0
    fp16_bytes = 2 * feats.keys[0].numel() * 2
    log(
        f"extract  K/V {tuple(feats.keys.shape)} (B, L, H, k, d) in {extract_s:.1f} s "
        f"({extract_s / cfg.num_images:.2f} s/image); {fp16_bytes / 2**20:.2f} MiB per image in fp16"
    )

    model.eval()
    with torch.no_grad():
        gap = (model(side_x, lpm_x=lpm_x) - model(side_x, features=feats)).abs().max().item()
    log(f"check    online vs pre-extracted logits: max |diff| = {gap:.2e}")

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.1)
    losses = []
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        loss = F.cross_entropy(model(side_x, features=feats), labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    log(f"train    {cfg.steps} steps from the extracted features in {train_s:.1f} s")
    log(f"         loss {' '.join(f'{v:.3f}' for v in losses)}")
    return dict(params=params, gap=gap, losses=losses, feature_shape=tuple(feats.keys.shape))
