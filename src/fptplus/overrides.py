"""`FIELD=VALUE` overrides for typed config dataclasses (used by the CLI's --set)."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError


def parse_value(text: str) -> Any:
    """Python literal if it parses ('0.2', '(448, 448)', 'None', '[10, 11]'), otherwise the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(config_cls: type, items: Iterable[str]) -> dict[str, Any]:
    """Turns ['token_ratio=0.3', 'fused_layers=[10, 11]'] into a dict, refusing unknown fields."""
    names = [f.name for f in dataclasses.fields(config_cls)]
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not FIELD=VALUE")
        if key not in names:
            raise ConfigError(f"{config_cls.__name__} has no field {key!r}; fields: {', '.join(names)}")
        out[key] = parse_value(value.strip())
    return out
