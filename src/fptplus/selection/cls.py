"""The CLS rule: a token's importance is the attention the class token pays it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import Selector, register

if TYPE_CHECKING:
    from torch import Tensor


def _scores(q: Tensor, k: Tensor, *, layer: int, scale: float, chunk_size: int | None, lse: Tensor | None) -> Tensor:
    from ..importance import token_importance  # torch loads with the model, not with the registry

    return token_importance(q, k, scale=scale, mode="cls")  # (B, H, N)


register(Selector("cls", "attention from the CLS query", _scores))
