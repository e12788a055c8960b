"""One registry of transfer-learning methods: `get_method("fpt_plus")`, `available_methods()`.

A method is a config factory plus a builder; adding a method is adding a module that calls `register`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        name: registry key (`--method NAME`).
        summary: one line for `--help`.
        config_cls: the method's typed config dataclass.
        make_config: (**overrides) -> a config with the method's defaults.
        build: (config, with_lpm=..., device=..., **timm_overrides) -> model with `param_count()` and
            `batch_args(batch) -> (args, kwargs)` for `model(*args, **kwargs) -> logits`.
        default_lr: learning rate when the run does not set one.
        kind: the inputs the model takes: "fpt" (side view + LPM K/V or LPM view) or "image" (one view).
    """

    name: str
    summary: str
    config_cls: type
    make_config: Callable[..., Any]
    build: Callable[..., nn.Module]
    default_lr: float = 1e-3
    kind: str = "fpt"

    def uses_store(self, config: Any) -> bool:
        """Whether this configuration can train from the preloaded feature store."""
        return self.kind == "fpt" and getattr(config, "fused_layers", None) != 0

    def validate(self, config: Any) -> nn.Module:
        """Every size, depth and ratio check of a full build, in a fraction of a second: the model is built on
        the meta device (shapes only, no weights read), so a bad setting surfaces before any expensive work.
        A weights file that does not exist is refused too. Returns the shape-only model."""
        import dataclasses

        from ..weights import check_weights_source

        if getattr(config, "weights", None) is not None:
            check_weights_source(config.backbone, config.weights)
        return self.build(dataclasses.replace(config, weights=None), with_lpm=True, device="meta")


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[name]


# The paper's Table 1 order (methods registered later follow, alphabetically).
TABLE1_ORDER = ("full_ft", "linear", "vpt_deep", "attn_tune", "adapter", "bitfit", "lora", "adalora", "fpt", "fpt_plus")


def available_methods() -> list[str]:
    """Registered method names, in the paper's Table 1 order."""
    known = [m for m in TABLE1_ORDER if m in _REGISTRY]
    return known + sorted(set(_REGISTRY) - set(known))


from . import adapter, fpt, lora, simple, vpt  # noqa: E402,F401  (each module registers its methods)
