"""The CLS rule: a token's importance is the attention the class token pays it."""

from __future__ import annotations

from torch import Tensor

from ..importance import token_importance
from . import Selector, register


def _scores(q: Tensor, k: Tensor, *, layer: int, scale: float, chunk_size: int | None, lse: Tensor | None) -> Tensor:
    return token_importance(q, k, scale=scale, mode="cls")  # (B, H, N)


register(Selector("cls", "attention from the CLS query", _scores))
