"""The package layering: no import cycles between fptplus's packages (function-level imports included), the
trainer never imports the pictures, the data layer never the store, and each package imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "fptplus"
PACKAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists())


def unit(module: str) -> str:
    """fptplus.store.writer -> store; fptplus.model -> model (a top-level module is its own unit)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fptplus"


def import_graph() -> dict[str, set[str]]:
    """unit -> units it imports, from every import statement (module level and inside functions)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts = parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts[: len(parts) - node.level + (1 if is_init else 0)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
            elif isinstance(node, ast.Import):
                target = node.names[0].name
            else:
                continue
            if target.startswith("fptplus.") and unit(".".join(parts)) != unit(target):
                edges[unit(".".join(parts))].add(unit(target))
    return edges


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_no_import_cycles_between_packages():
    edges = import_graph()
    cycles = sorted((a, b) for a in edges for b in edges[a] if a in reachable(edges, b))
    assert not cycles, f"import cycles (a imports b, and b reaches a): {cycles}"


@pytest.mark.parametrize(
    "lower,upper",
    [("trainer", "viz"), ("trainer", "cli"), ("data", "store"), ("data", "methods"), ("store", "methods"),
     ("store", "trainer"), ("methods", "trainer"), ("model", "store"), ("backbones", "model"),
     ("backbones", "methods"), ("backbones", "store"), ("backbones", "data")],
)  # fmt: skip
def test_layers_point_one_way(lower, upper):
    assert upper not in reachable(import_graph(), lower), f"{lower} reaches {upper}"


def test_each_package_imports_alone():
    procs = {
        name: subprocess.Popen([sys.executable, "-c", f"import fptplus.{name}"], stderr=subprocess.PIPE, text=True)
        for name in PACKAGES
    }
    failed = {name: p.communicate(timeout=300)[1][-500:] for name, p in procs.items() if p.wait() != 0}
    assert not failed, failed


def module_graph() -> dict[str, set[str]]:
    """module -> fptplus modules it imports (module level and inside functions; `from .x import y` counts x.y when
    that is a module)."""
    mods: dict[str, tuple[Path, bool]] = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_init else parts)] = (path, is_init)
    edges: dict[str, set[str]] = defaultdict(set)
    for name, (path, is_init) in mods.items():
        parts = name.split(".")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = parts[: len(parts) - node.level + (1 if is_init else 0)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                candidates = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            edges[name] |= {t for t in candidates if t in mods and t != name}
    return edges


def test_no_import_cycles_between_modules():
    """Finer than the packages: no two modules reach each other (run.py and folds.py once did, through imports
    inside functions that the package-level check cannot see)."""
    edges = module_graph()
    cycles = sorted((a, b) for a in edges for b in edges[a] if a in reachable(edges, b))
    assert not cycles, f"module import cycles (a imports b, and b reaches a): {cycles[:5]}"
