"""One registry of transfer-learning methods: `get_method("fpt_plus")`, `available_methods()`.

A method is a config factory plus a builder. The built-in ones are declared in `catalog.py` with their configs
(`configs.py`, plain dataclasses) and their builders named by module (`Lazy`): reading the registry loads no torch,
so the command line's `--help` and its config checks answer at once; the model code loads when a model is built.
"""

from . import catalog  # noqa: F401  (registers the built-in methods)
from .registry import TABLE1_ORDER, Lazy, Method, MethodModel, available_methods, get_method, register

__all__ = ["TABLE1_ORDER", "Lazy", "Method", "MethodModel", "available_methods", "get_method", "register"]
