"""The method registry: `Method` (what a method is), `register`, `get_method`, `available_methods`, and `Lazy` (how
a registration names model code without importing it)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import ConfigError
from .inputs import ImageView, SideViewFeatures

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from ..backbones import LPMSpec
    from ..params import ParamCount


@runtime_checkable
class MethodModel(Protocol):
    """The contract every method's model keeps with the trainer, the benchmarks, `evaluate`/`predict`, the app
    and the exporter (they call nothing else): `model(*args, **kwargs)` -> logits (B, C) for
    `args, kwargs = model.batch_args(batch)`, the learnable/total parameter count, and the ViT's shape facts."""

    spec: LPMSpec

    def batch_args(self, batch: dict[str, Tensor]) -> tuple[tuple, dict[str, Any]]: ...

    def param_count(self) -> ParamCount: ...


@dataclass(frozen=True)
class Lazy:
    """A function named by its module and attribute, imported on its first call: how the registry refers to model
    code without loading torch."""

    module: str
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(*args, **kwargs)


@dataclass(frozen=True)
class Method:
    """A registered method: its config, how its model is built, what the model consumes, and its training hooks.

    Attributes:
        name: registry key (`--method NAME`).
        summary: one line for `--help`.
        config_cls: the method's typed config dataclass.
        make_config: (**overrides) -> a config with the method's defaults.
        builder: (config, device=None, source="online") -> model with `param_count()` and
            `batch_args(batch) -> (args, kwargs)` for `model(*args, **kwargs) -> logits`. `source` is where the
            inputs come from: "online" (from images; FPT attaches its frozen model) or "store" (stored features).
        default_lr: learning rate when the run does not set one.
        inputs: what the model consumes (`inputs.ImageView` or `inputs.SideViewFeatures`): views, datasets,
            evaluation items and benchmark batches.
        prepare: (config, total optimizer steps) -> config, before the model is built (AdaLoRA's budget schedule).
        after_step: (model, step) after every optimizer step (AdaLoRA's budget allocation).
        optimizer, scheduler, objective: a method's own builders replacing the paper's AdamW, cosine schedule and
            (class-weighted) cross-entropy (`fptplus.trainer.loop.build_optimizer`, `build_scheduler`,
            `trainer.objective.make_objective` give the signatures); None keeps the paper's.
        fitter: for a model fitted in closed form from frozen features instead of by gradient steps (the probes):
            (config, features (n, F), labels, folds, task, num_classes) -> `probe.ProbeFit`; the trainer then runs
            `fptplus.trainer.probe` instead of its gradient loop.
    """

    name: str
    summary: str
    config_cls: type
    make_config: Callable[..., Any]
    builder: Callable[..., nn.Module]
    default_lr: float = 1e-3
    inputs: Any = field(default_factory=ImageView)
    prepare: Callable[[Any, int], Any] | None = None
    after_step: Callable[[nn.Module, int], None] | None = None
    fitter: Callable[..., Any] | None = None
    optimizer: Callable[..., Any] | None = None
    scheduler: Callable[..., Any] | None = None
    objective: Callable[..., Any] | None = None

    def build(self, config: Any, device: str | torch.device | None = None, source: str = "online") -> MethodModel:
        """The model of `config`; source "store" leaves out what stored features replace (FPT's frozen model)."""
        if source not in self.inputs.sources(config):
            raise ConfigError(f"{self.name} cannot read its inputs from {source!r} (sources: {self.sources(config)})")
        model = self.builder(config, device=device, source=source)
        if not isinstance(model, MethodModel):
            raise TypeError(f"method {self.name}: its builder returned a {type(model).__name__} without the "
                            "MethodModel contract (spec, batch_args, param_count)")  # fmt: skip
        return model

    def sources(self, config: Any) -> tuple[str, ...]:
        """Where this configuration's training inputs can come from ("store" first when it can use one)."""
        return self.inputs.sources(config)

    def uses_store(self, config: Any) -> bool:
        """Whether this configuration trains from a preloaded feature store (FPT/FPT+ with fused layers, probes)."""
        return "store" in self.sources(config)

    def fuses_lpm(self, config: Any) -> bool:
        """Whether the model fuses the frozen model's selected tokens (FPT/FPT+ with fused layers): what `explain`
        and the app draw."""
        return isinstance(self.inputs, SideViewFeatures) and self.uses_store(config)

    def label(self, source: str, config: Any = None) -> str:
        """The method's name in tables, with its source when it has more than one kind ("fpt_plus (store)")."""
        return f"{self.name} ({source})" if getattr(self.inputs, "several_sources", False) else self.name

    def plan_training(self, config: Any, total_steps: int) -> Any:
        return self.prepare(config, total_steps) if self.prepare is not None else config

    def step_done(self, model: nn.Module, step: int) -> None:
        if self.after_step is not None:
            self.after_step(model, step)

    def validate(self, config: Any) -> nn.Module:
        """Every size, depth and ratio check of a full build, in a fraction of a second: the model is built on
        the meta device (shapes only, no weights read), so a bad setting surfaces before any expensive work.
        A weights file that does not exist is refused too. Returns the shape-only model."""
        import dataclasses

        from ..backbones import check_weights_source

        if getattr(config, "weights", None) is not None:
            check_weights_source(config.backbone, config.weights)
        return self.build(dataclasses.replace(config, weights=None), device="meta", source="online")


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
