"""Helpers shared by the subcommands: model flags generated from the method's config, small parsers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import RunConfig, add_dataclass_flags, build_dataclass, given
from ..errors import ConfigError
from ..methods import Method, available_methods, get_method
from ..overrides import parse_overrides
from ..weights import NONE

FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def method_of(argv: Sequence[str]) -> Method:
    """The --method of the command line (or of its --config / --resume run), before the full parse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method")
    pre.add_argument("--config")
    pre.add_argument("--resume")
    known, _ = pre.parse_known_args(argv)
    if known.method == "all":  # `params --method all`: every method, common fields only
        return get_method("fpt_plus")
    if known.method:
        return get_method(known.method)
    for source in (known.config, known.resume and str(Path(known.resume) / "config.yaml")):
        if source and Path(source).exists():
            return get_method(RunConfig.load(source).method)
    return get_method("fpt_plus")


class _Given(argparse.Action):
    """Stores the value and records that the flag was on the command line (`args.given_<dest>`)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"given_{self.dest}", True)


def add_model_flags(p: argparse.ArgumentParser, method: Method, extra_choices: tuple[str, ...] = ()) -> None:
    choices = [*available_methods(), *extra_choices]
    p.add_argument("--method", default=method.name, choices=choices, action=_Given, help="transfer-learning method")
    title = f"model ({method.name}; `--method NAME --help` lists another method's fields)"
    add_dataclass_flags(p, method.config_cls, title, skip=("num_classes",), defaults=method.make_config())
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any model field, e.g. --set num_prompts=32 (same as the flags above)")  # fmt: skip


def model_from_args(args: argparse.Namespace, method: Method, base: dict[str, Any] | None = None, **extra) -> Any:
    flags = given(args, method.config_cls)
    if "weights" in flags and flags["weights"] is None:
        flags["weights"] = NONE  # `--weights none` is an explicit choice of random init, unlike no --weights at all
    values = {**(base or {}), **flags, **parse_overrides(method.config_cls, args.set), **extra}
    return build_dataclass(method.config_cls, values, "model", method.make_config)


def require_weights(model_cfg: Any) -> None:
    """Commands that produce results refuse a run without a chosen weights source (random init must be asked for)."""
    from ..backbones import check_weights_source  # the backbone families (timm) load with the command, not --help

    check_weights_source(model_cfg.backbone, model_cfg.weights)


def parse_methods(text: str) -> list[str]:
    names = available_methods() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    for n in names:
        get_method(n)
    return names


def resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "meta"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here; use --device meta for the exact accounting on CPU")
    return choice
