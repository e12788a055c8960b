"""The timm family: timm's own `VisionTransformer` (never a fork), by timm model name.

Weights come from a local file (loaded strictly after timm's own position-embedding resampling,
`checkpoint_filter_fn`), the timm hub, or a seeded random init. Q/K/V are captured with forward hooks on each
block's `attn.qkv`, `attn.q_norm` and `attn.k_norm` while timm's fused attention runs; the frozen forward stops
early through timm's `forward_intermediates`.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._utils import Size, check_multiple_of_patch, to_hw
from ..errors import ConfigError, WeightsError
from ..weights import HUB, RANDOM_INIT_SEED, is_random, read_state_dict
from .base import AttentionMode, BackboneFamily, LPMSpec, Pooled, QKVSink


def check_model_name(name: str) -> None:
    """Refuses names timm does not know, suggesting close ones."""
    if timm.is_model(name):
        return
    base = name.split(".")[0]
    candidates = timm.list_models("vit_*") + timm.list_models("*dinov2*")
    close = difflib.get_close_matches(base, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `timm.list_models('vit_*')`."
    raise ConfigError(f"unknown timm model name {name!r}.{hint}")


def check_vit(model: torch.nn.Module, name: str) -> VisionTransformer:
    """fptplus hooks timm's plain pre-norm ViT blocks; refuse anything else with a clear message."""
    if not isinstance(model, VisionTransformer):
        raise ConfigError(
            f"{name!r} builds a {type(model).__name__}, not a timm VisionTransformer; fptplus needs a ViT "
            "(e.g. vit_base_patch16_224, vit_large_patch16_224, vit_small_patch14_dinov2)."
        )
    for i, blk in enumerate(model.blocks):
        if type(blk) is not Block or type(blk.attn) is not Attention:
            raise ConfigError(
                f"{name!r}: block {i} is {type(blk).__name__} with {type(blk.attn).__name__}; fptplus supports "
                "timm's standard Block/Attention (qkv projection + optional q/k norm) only."
            )
    return model


def create_vit(
    name: str,
    img_size: Size,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    **overrides,
) -> VisionTransformer:
    """Creates a timm ViT without a classifier head at `img_size`.

    Args:
        name: timm model name, e.g. "vit_base_patch16_224" or "vit_base_patch16_224.dino".
        img_size: input resolution, int or (H, W); must be a multiple of the patch size.
        weights: None or "none" for random init (always drawn with seed RANDOM_INIT_SEED, so it is reproducible;
            for tests and benchmarks), "hub" to download timm's pretrained weights, "builtin:dinov2_vits14" for
            the offline DINOv2 ViT-S/14 (see `fptplus.pretrained`), or a local path to a .safetensors file or a
            weights-only torch checkpoint.
        device: where to create the parameters ("meta" builds a shape-only model with no memory).
        **overrides: extra timm model kwargs (tests shrink depth/width with these), and fptplus's own
            `pos_embed_resize`: "timm" (default: timm resamples the checkpoint's position embeddings once to the
            exact grid, bicubic with antialiasing) or "authors" (the FPT+ authors' / DINOv2's run-time rule:
            bicubic with scale factor (g + 0.1) / g0, no antialiasing; square inputs and a weights file only).
    """
    check_model_name(name)
    resize = overrides.pop("pos_embed_resize", "timm")
    if resize not in POS_EMBED_RESIZE:
        raise ConfigError(f"pos_embed_resize must be one of {POS_EMBED_RESIZE}, got {resize!r}")
    weights = None if is_random(weights) else weights
    if weights is not None and str(weights).startswith("builtin:"):
        from ..pretrained import resolve_weights

        weights = resolve_weights(weights)
    hw = to_hw(img_size, "LPM input size")
    kwargs = dict(num_classes=0, img_size=hw, **overrides)
    probe = _probe(name, kwargs)
    check_multiple_of_patch(hw, tuple(probe.patch_embed.patch_size), f"{name} input size")
    if weights is not None and str(weights) == HUB:
        if device is not None and str(device) == "meta":
            raise ConfigError("weights='hub' cannot be loaded on the meta device")
        model = _create_from_hub(name, **kwargs)
        return model.to(device) if device is not None else model
    if device is not None and str(device) == "meta" and weights is None:
        return probe
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(RANDOM_INIT_SEED)  # a random-init LPM is the same everywhere (store, online, predict)
        model = timm.create_model(name, pretrained=False, **kwargs)
    if weights is not None:
        load_weights_file(model, weights, name)
        if resize == "authors":
            resize_pos_embed_like_authors(model, read_state_dict(weights)["pos_embed"])
    elif resize == "authors" and device is not None and str(device) != "meta":
        raise ConfigError("pos_embed_resize='authors' resamples a checkpoint's position embeddings: pass --weights")
    return model


POS_EMBED_RESIZE = ("timm", "authors")


def authors_pos_embed(pos_embed: Tensor, grid: tuple[int, int], prefix: int) -> Tensor:
    """The FPT+ authors' (DINOv2's `interpolate_pos_encoding`) resampling of (1, prefix + g0², D) position
    embeddings to a square `grid`: bicubic, scale factor (g + 0.1) / g0, no antialiasing."""
    gh, gw = grid
    if gh != gw:
        raise ConfigError(f"pos_embed_resize='authors' is defined for square inputs; this grid is {gh}x{gw}")
    head, patches = pos_embed[:, :prefix], pos_embed[:, prefix:]  # (1, P, D), (1, g0², D)
    g0 = math.isqrt(patches.shape[1])
    if g0 * g0 != patches.shape[1]:
        raise ConfigError(f"the checkpoint's position embeddings are not a square grid ({patches.shape[1]} patches)")
    if g0 == gh:
        return pos_embed
    dim = patches.shape[-1]
    grid_in = patches.reshape(1, g0, g0, dim).permute(0, 3, 1, 2).float()  # (1, D, g0, g0)
    scale = (gh + 0.1) / g0
    out = F.interpolate(grid_in, scale_factor=(scale, scale), mode="bicubic", antialias=False)  # (1, D, gh, gh)
    if out.shape[-2:] != (gh, gw):
        raise ConfigError(f"the authors' resampling gives a {tuple(out.shape[-2:])} grid, expected {(gh, gw)}")
    out = out.permute(0, 2, 3, 1).reshape(1, gh * gw, dim).to(pos_embed.dtype)  # (1, g², D)
    return torch.cat([head, out], dim=1)


@torch.no_grad()
def resize_pos_embed_like_authors(model: VisionTransformer, original: Tensor) -> None:
    """Replaces the timm-resampled position embeddings with the authors' resampling of the checkpoint's own."""
    prefix = model.pos_embed.shape[1] - math.prod(model.patch_embed.grid_size)  # class (and register) positions
    model.pos_embed.copy_(authors_pos_embed(original.to(model.pos_embed), tuple(model.patch_embed.grid_size), prefix))


def _probe(name: str, kwargs: dict) -> VisionTransformer:
    """Shape-only (meta device) build that validates the architecture before any real work."""
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as err:
        raise ConfigError(
            f"{name!r} cannot be built as a timm VisionTransformer with {sorted(kwargs)} ({err}); fptplus "
            "needs a ViT (e.g. vit_base_patch16_224, vit_large_patch16_224, vit_small_patch14_dinov2)."
        ) from err
    return check_vit(model, name)


def _create_from_hub(name: str, **kwargs) -> torch.nn.Module:
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (ConfigError, WeightsError):
        raise
    except Exception as err:
        raise WeightsError(
            f"could not fetch pretrained weights for {name!r} from the timm/Hugging Face hub "
            f"({type(err).__name__}: {err}). If this machine is offline or the hub is unreachable, download "
            "the weights on another machine and pass the local file instead (weights=PATH / --weights PATH)."
        ) from err


def load_weights_file(model: VisionTransformer, path: str | os.PathLike, name: str) -> None:
    """Loads a local checkpoint strictly (after timm's own position-embedding resampling)."""
    state = read_state_dict(path)
    try:
        state = checkpoint_filter_fn(state, model)
    except Exception as err:
        raise WeightsError(
            f"weight file {str(path)!r} cannot be adapted to {name!r} ({type(err).__name__}: {err}); "
            "check that the file belongs to this architecture."
        ) from err
    expected = model.state_dict()
    if not any(k.startswith("head.") for k in expected):  # we never keep the pretrained classifier
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mismatched),
        ):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise WeightsError(
            f"weight file {str(path)!r} does not fit timm model {name!r} (embed_dim={model.embed_dim}, "
            f"depth={len(model.blocks)}, patch={tuple(model.patch_embed.patch_size)}): {'; '.join(parts)}. "
            "Choose the backbone name that matches the file."
        )
    if next(model.parameters()).is_meta:
        model.load_state_dict(state, strict=True, assign=True)
    else:
        model.load_state_dict(state, strict=True)


class SplitQKV(nn.Module):
    """Drop-in for timm's fused `attn.qkv`: q, k, v Linears sharing the fused parameters' storage (no copy,
    identical outputs), so peft can target `q` and `v` by name."""

    def __init__(self, qkv: nn.Linear) -> None:
        super().__init__()
        out = qkv.out_features // 3
        linears = []
        for i in range(3):
            lin = nn.Linear(qkv.in_features, out, bias=qkv.bias is not None, device="meta")
            lin.weight = nn.Parameter(qkv.weight[i * out : (i + 1) * out], requires_grad=qkv.weight.requires_grad)
            if qkv.bias is not None:
                lin.bias = nn.Parameter(qkv.bias[i * out : (i + 1) * out], requires_grad=qkv.bias.requires_grad)
            linears.append(lin)
        self.q, self.k, self.v = linears

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)  # (B, N, 3D), timm's qkv layout


class TimmFamily(BackboneFamily):
    """timm VisionTransformer models by name (the default family: names without a prefix)."""

    prefix = ""
    summary = "timm VisionTransformer by model name, e.g. vit_base_patch16_224, vit_small_patch14_dinov2"

    def owns(self, name: str) -> bool:
        return True  # the fallback: asked after every prefixed family

    def create(self, name, img_size, weights, device=None, **overrides) -> VisionTransformer:
        return create_vit(name, img_size, weights, device, **overrides)

    def spec(self, name: str, model: nn.Module) -> LPMSpec:
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        return LPMSpec(
            name=name,
            img_size=tuple(model.patch_embed.img_size),
            patch_size=tuple(model.patch_embed.patch_size),
            grid_size=tuple(model.patch_embed.grid_size),
            num_prefix_tokens=int(model.num_prefix_tokens),
            depth=len(model.blocks),
            embed_dim=int(model.embed_dim),
            num_heads=int(model.blocks[0].attn.num_heads),
            num_params=sum(p.numel() for p in model.parameters()),
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            pooled_cls=model.num_prefix_tokens > 0 and getattr(model, "global_pool", "") == "token",
        )

    def blocks(self, model: nn.Module) -> Sequence[nn.Module]:
        return model.blocks

    def mlp(self, block: nn.Module) -> nn.Module:
        return block.mlp

    def capture_qkv(self, model: nn.Module, layer: int, sink: QKVSink) -> list[RemovableHandle]:
        attn = model.blocks[layer].attn

        def on_qkv(module: nn.Module, args: tuple, out: Tensor) -> None:
            B, N, _ = out.shape
            qkv = out.reshape(B, N, 3, attn.num_heads, attn.head_dim)  # (B, N, 3, H, d)
            sink("v", qkv[:, :, 2].transpose(1, 2))  # (B, H, N, d)

        return [
            attn.qkv.register_forward_hook(on_qkv),
            attn.q_norm.register_forward_hook(lambda m, a, out: sink("q", out)),  # (B, H, N, d), after q_norm
            attn.k_norm.register_forward_hook(lambda m, a, out: sink("k", out)),  # (B, H, N, d), after k_norm
        ]

    def attention_scale(self, model: nn.Module, layer: int) -> float:
        return float(model.blocks[layer].attn.scale)

    def forward_to(self, model: nn.Module, x: Tensor, layer: int, pooled: bool) -> Pooled | None:
        out = model.forward_intermediates(
            x,
            indices=[layer],
            stop_early=True,
            intermediates_only=True,
            output_fmt="NLC",
            norm=pooled,
            return_prefix_tokens=pooled,
        )
        if not pooled:
            return None
        patches, prefix = out[0]  # (B, N - P, D) patch tokens, (B, P, D) CLS (+ registers), final norm applied
        return Pooled(prefix[:, 0], patches.mean(dim=1))  # (B, D) x2

    def projections(self, model: nn.Module) -> dict[str, str]:
        for block in model.blocks:
            if not isinstance(block.attn.qkv, SplitQKV):
                block.attn.qkv = SplitQKV(block.attn.qkv)
        return {"q": "q", "k": "k", "v": "v"}

    def is_attention_param(self, name: str) -> bool:
        return ".attn." in name  # qkv and proj weights + biases (and q/k norms if the ViT has them)

    def set_attention(self, model: nn.Module, mode: AttentionMode) -> Callable[[], None]:
        attns = [m for m in model.modules() if isinstance(m, Attention)]
        saved = [a.fused_attn for a in attns]
        for a in attns:
            a.fused_attn = mode == "fused"

        def restore() -> None:
            for a, s in zip(attns, saved, strict=True):
                a.fused_attn = s

        return restore

    def check_weights(self, name: str, weights: str) -> None:
        if os.path.isdir(weights):
            raise WeightsError(f"{weights!r} is a folder; timm backbones take a weights file (.safetensors or .pt)")

    def hub_identity(self, name: str) -> dict[str, str]:
        with torch.device("meta"):
            cfg = timm.create_model(name, pretrained=False).pretrained_cfg
        return {"source": "hub", "id": str(cfg.get("hf_hub_id") or f"{cfg.get('architecture')}.{cfg.get('tag')}")}


from . import register_family  # noqa: E402

TIMM = register_family(TimmFamily())
