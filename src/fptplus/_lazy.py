"""Lazy package exports (PEP 562), so that importing a package, or the command line's `--help`, loads no torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], exports: dict[str, list[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:  # fmt: skip
    """`__getattr__` and `__dir__` for a package whose public names live in submodules.

    Args:
        package: the package's `__name__`.
        namespace: the package's `globals()`; a name is cached there on first use.
        exports: relative module name -> the names it provides.
    """
    where = {name: module for module, names in exports.items() for name in names}

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(where))

    return getattr_, dir_
