"""The Hugging Face transformers family: `ViTModel` and `Dinov2Model` (`--backbone hf:<folder-or-hub-id>`).

    hf:/models/rad-dino              a save_pretrained folder (config.json, weights, preprocessor_config.json)
    hf:google/vit-base-patch16-384   a Hub repository (needs the internet, or the local Hub cache)
    hf:vit, hf:dinov2                the architecture with transformers' default config (random init, tests)

The model is transformers' own class (never a fork), built at the requested resolution: a pretrained
checkpoint is loaded by transformers' `from_pretrained` (which renames keys of older transformers versions) at its
own resolution, and its position embeddings are resampled with the same function timm uses (bicubic,
antialiased), so the same weights give the same numbers in both families. fptplus runs the blocks itself
(embeddings -> blocks -> final LayerNorm on the CLS token), which lets the frozen forward stop early; Q/K/V are
captured by forward hooks on each block's `q_proj`, `k_proj`, `v_proj` while transformers' attention runs.
Needs `pip install fptplus[hf]` (transformers >= 5).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._utils import check_multiple_of_patch, to_hw
from ..errors import ConfigError, WeightsError
from ..logs import get_logger
from ..weights import HUB, RANDOM_INIT_SEED, folder_identity, is_random, read_state_dict
from .base import AttentionMode, BackboneFamily, LPMSpec, Pooled, QKVSink

_log = get_logger("backbones.hf")

PREFIX = "hf:"
ARCHITECTURES = ("vit", "dinov2")  # transformers model_type values this family reads
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
POS_KEY = "embeddings.position_embeddings"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "hf: backbones need Hugging Face transformers: pip install 'fptplus[hf]' (or transformers>=5)"
        ) from None
    if int(transformers.__version__.split(".")[0]) < 5:
        raise ConfigError(
            f"hf: backbones need transformers >= 5 (its ViT/DINOv2 name the projections q_proj/k_proj/v_proj); "
            f"found {transformers.__version__}: pip install -U 'transformers>=5'"
        )
    return transformers


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' own warnings (unused pooler weights, ...) at error level while fptplus loads."""
    logging = _transformers().utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


class HFViT(nn.Module):
    """A transformers ViTModel / Dinov2Model read the way fptplus reads a ViT: `model(x)` -> (B, D) final-normed CLS.

    Attributes:
        model: the transformers model (its parameter names are kept under `model.`).
        mean, std: the normalisation of its image processor (ImageNet's when it has none).
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.mean, self.std = tuple(mean), tuple(std)

    @property
    def layers(self) -> nn.ModuleList:
        model = self.model
        return model.layers if hasattr(model, "layers") else model.encoder.layer  # ViT | Dinov2

    def embed(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) -> tokens (B, 1 + N_patches, D) with position embeddings."""
        if self.model.config.model_type == "vit":
            return self.model.embeddings(x, interpolate_pos_encoding=False)
        return self.model.embeddings(x)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)  # (B, N, D)
        return self.model.layernorm(h[:, 0])  # (B, D)


def _ref(name: str) -> str:
    ref = name[len(PREFIX) :]
    if not ref:
        raise ConfigError(f"{name!r}: give a folder or a Hub id after hf:, e.g. hf:google/vit-base-patch16-384")
    return ref


def _load_config(ref: str, overrides: dict[str, Any]):
    tf = _transformers()
    if ref in ARCHITECTURES and not Path(ref).is_dir():
        config = {"vit": tf.ViTConfig, "dinov2": tf.Dinov2Config}[ref]()
    else:
        try:
            with _quiet_transformers():
                config = tf.AutoConfig.from_pretrained(ref, local_files_only=Path(ref).is_dir())
        except Exception as err:
            where = "folder" if Path(ref).is_dir() else "Hub repository (or no such local folder)"
            raise ConfigError(
                f"could not read the config of the {where} {ref!r} ({type(err).__name__}: {str(err)[:200]}). "
                "Offline? Download it elsewhere (save_pretrained, or `hf download REPO --local-dir DIR`) and "
                "pass --backbone hf:DIR."
            ) from None
    if config.model_type not in ARCHITECTURES:
        raise ConfigError(
            f"hf:{ref} is a transformers {config.model_type!r} model; fptplus reads ViTModel ('vit') and "
            f"Dinov2Model ('dinov2') checkpoints"
        )
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ConfigError(f"hf:{ref}: {type(config).__name__} has no field {key!r} (backbone_kwargs)")
        try:
            setattr(config, key, value)
        except (TypeError, ValueError) as err:  # transformers' configs validate their fields
            raise ConfigError(f"hf:{ref}: backbone_kwargs {key}={value!r} refused by {type(config).__name__}: "
                              f"{str(err).splitlines()[-1].strip()}") from None  # fmt: skip
    return config


@functools.lru_cache(maxsize=16)
def _processor_stats(ref: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The image mean/std of the folder's (or the Hub repo's cached) preprocessor_config.json."""
    path = Path(ref) / "preprocessor_config.json"
    if not path.is_file() and ref not in ARCHITECTURES:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "preprocessor_config.json")
            path = Path(cached) if isinstance(cached, str) else path
        except Exception:
            pass
    if not path.is_file():
        if ref not in ARCHITECTURES:
            _log.warning("hf:%s has no preprocessor_config.json; normalising with ImageNet's mean/std", ref)
        return IMAGENET
    stats = json.loads(path.read_text())
    return tuple(stats.get("image_mean", IMAGENET[0])), tuple(stats.get("image_std", IMAGENET[1]))


def _model_class(config):
    tf = _transformers()
    return {"vit": tf.ViTModel, "dinov2": tf.Dinov2Model}[config.model_type]


def _build(config, device) -> nn.Module:
    cls = _model_class(config)
    kwargs = {"add_pooling_layer": False} if config.model_type == "vit" else {}
    with torch.device(device or "cpu"):
        return cls(config, **kwargs)


def _pretrained_state(ref: str, source: str) -> dict[str, Tensor]:
    """Weights of the checkpoint `source` (the ref itself for "hub", a folder, or a state-dict file) in the current
    transformers naming, at the checkpoint's own resolution."""
    if source != HUB and Path(source).is_file():
        return read_state_dict(source)
    target = ref if source == HUB else source
    config = _load_config(target, {}) if target not in ARCHITECTURES else None
    if config is None:
        raise WeightsError(f"hf:{ref} names an architecture, not a checkpoint: there are no weights='hub' for it")
    cls = _model_class(config)
    kwargs = {"add_pooling_layer": False} if config.model_type == "vit" else {}
    try:
        with _quiet_transformers():
            model = cls.from_pretrained(target, local_files_only=Path(target).is_dir(), **kwargs)
    except Exception as err:
        raise WeightsError(
            f"could not load the weights of {target!r} ({type(err).__name__}: {str(err)[:200]}); if this machine "
            "is offline, download the repository elsewhere and pass its folder (--backbone hf:DIR --weights hub)"
        ) from None
    return model.state_dict()


def _fit_state(state: dict[str, Tensor], model: nn.Module, name: str) -> dict[str, Tensor]:
    """Prefixes of task models stripped, heads dropped, position embeddings resampled to the model's grid."""
    from timm.layers import resample_abs_pos_embed

    for prefix in ("vit.", "dinov2.", "model."):
        if state and all(k.startswith(prefix) or k.split(".")[0] in ("classifier", "pooler") for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if k.split(".")[0] not in ("classifier", "pooler", "head")}
    expected = model.state_dict()
    if POS_KEY in state and POS_KEY in expected and state[POS_KEY].shape != expected[POS_KEY].shape:
        old = state[POS_KEY].shape[1] - 1
        side = round(old**0.5)
        if side * side != old:
            raise WeightsError(f"{name}: cannot resample a non-square grid of {old} position embeddings")
        patch = to_hw(model.config.patch_size, "patch size")
        grid = tuple(s // p for s, p in zip(to_hw(model.config.image_size), patch, strict=True))
        state[POS_KEY] = resample_abs_pos_embed(
            state[POS_KEY].float(), new_size=grid, old_size=(side, side), num_prefix_tokens=1, verbose=False
        )  # (1, 1 + gh·gw, D), as timm's checkpoint_filter_fn does
    if "embeddings.mask_token" not in expected:
        state.pop("embeddings.mask_token", None)  # masked-image pre-training only; not built (see create)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]  # fmt: skip
    if missing or unexpected or mismatched:
        parts = [f"{label}: {', '.join(items[:5])}{f' (+{len(items) - 5} more)' if len(items) > 5 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected),
                                      ("shape mismatch", mismatched)) if items]  # fmt: skip
        raise WeightsError(
            f"the weights do not fit {name} ({'; '.join(parts)}). A file must hold a {type(model).__name__} state "
            "dict in transformers >= 5 naming; for older checkpoints pass their save_pretrained folder instead."
        )
    return state


class HFFamily(BackboneFamily):
    """transformers ViTModel / Dinov2Model: `hf:<folder>`, `hf:<hub id>`, or `hf:vit` / `hf:dinov2`."""

    prefix = PREFIX
    summary = "Hugging Face transformers ViTModel/Dinov2Model: hf:<folder or Hub id> (pip install 'fptplus[hf]')"

    def create(self, name, img_size, weights, device=None, **overrides) -> HFViT:
        ref = _ref(name)
        config = _load_config(ref, overrides)
        hw = to_hw(img_size, "LPM input size")
        check_multiple_of_patch(hw, to_hw(config.patch_size, "patch size"), f"{name} input size")
        if config.model_type == "dinov2" and hw[0] != hw[1]:
            raise ConfigError(f"{name}: transformers' Dinov2Model runs square inputs only, got {hw[0]}x{hw[1]}")
        config.image_size = hw[0] if hw[0] == hw[1] else list(hw)
        if hasattr(config, "use_mask_token"):
            config.use_mask_token = False  # masked-image pre-training only: an unused (untrainable) parameter
        meta = device is not None and str(device) == "meta"
        weights = None if is_random(weights) else str(weights)
        if weights is not None and meta:
            raise ConfigError("pretrained weights cannot be loaded on the meta device")
        mean, std = _processor_stats(ref)
        if meta:
            return HFViT(_build(config, "meta"), mean, std)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)  # a random init is the same everywhere (store, online, predict)
            model = _build(config, "cpu")
        if weights is not None:
            model.load_state_dict(_fit_state(_pretrained_state(ref, weights), model, name), strict=True)
        model.eval()
        return HFViT(model, mean, std).to(device or "cpu")

    def spec(self, name: str, model: nn.Module) -> LPMSpec:
        config = model.model.config
        hw = to_hw(config.image_size, "image size")
        patch = to_hw(config.patch_size, "patch size")
        return LPMSpec(
            name=name,
            img_size=hw,
            patch_size=patch,
            grid_size=(hw[0] // patch[0], hw[1] // patch[1]),
            num_prefix_tokens=1,
            depth=int(config.num_hidden_layers),
            embed_dim=int(config.hidden_size),
            num_heads=int(config.num_attention_heads),
            num_params=sum(p.numel() for p in model.parameters()),
            mean=model.mean,
            std=model.std,
            pooled_cls=True,
        )

    def blocks(self, model: nn.Module) -> Sequence[nn.Module]:
        return model.layers

    def mlp(self, block: nn.Module) -> nn.Module:
        return block.mlp

    def capture_qkv(self, model: nn.Module, layer: int, sink: QKVSink) -> list[RemovableHandle]:
        attn = model.layers[layer].attention
        heads = model.model.config.num_attention_heads

        def hook(what: str):
            def fn(module: nn.Module, args: tuple, out: Tensor) -> None:
                B, N, _ = out.shape
                sink(what, out.view(B, N, heads, -1).transpose(1, 2))  # (B, N, H·d) -> (B, H, N, d)

            return fn

        return [getattr(attn, f"{w}_proj").register_forward_hook(hook(w)) for w in ("q", "k", "v")]

    def attention_scale(self, model: nn.Module, layer: int) -> float:
        return float(model.layers[layer].attention.scaling)

    def forward_to(self, model: nn.Module, x: Tensor, layer: int, pooled: bool) -> Pooled | None:
        h = model.embed(x)  # (B, N, D)
        for block in model.layers[: layer + 1]:
            h = block(h)
        if not pooled:
            return None
        h = model.model.layernorm(h)  # (B, N, D): one CLS token, then the patches
        return Pooled(h[:, 0], h[:, 1:].mean(dim=1))  # (B, D) x2

    def projections(self, model: nn.Module) -> dict[str, str]:
        return {"q": "q_proj", "k": "k_proj", "v": "v_proj"}

    def is_attention_param(self, name: str) -> bool:
        return ".attention." in name  # q/k/v/o projections, weights and biases

    def set_attention(self, model: nn.Module, mode: AttentionMode) -> Callable[[], None]:
        configs = {id(m.model.config): m.model.config for m in model.modules() if isinstance(m, HFViT)}
        saved = {key: c._attn_implementation for key, c in configs.items()}
        for c in configs.values():
            c._attn_implementation = "eager" if mode == "eager" else "sdpa"

        def restore() -> None:
            for key, c in configs.items():
                c._attn_implementation = saved[key]

        return restore

    def check_weights(self, name: str, weights: str) -> None:
        path = Path(weights)
        if path.is_dir() and not (path / "config.json").is_file():
            raise WeightsError(f"{weights!r} is a folder without config.json; pass a save_pretrained folder")

    def hub_identity(self, name: str) -> dict[str, str]:
        ref = _ref(name)
        if Path(ref).is_dir():
            return folder_identity(Path(ref))
        return {"source": "hf-hub", "id": ref}


from . import register_family  # noqa: E402

HF = register_family(HFFamily())
