"""The paper's rule: a token's importance is the mean attention it receives from every query of its head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import Selector, register

if TYPE_CHECKING:
    from torch import Tensor


def _scores(q: Tensor, k: Tensor, *, layer: int, scale: float, chunk_size: int | None, lse: Tensor | None) -> Tensor:
    from ..importance import token_importance  # torch loads with the model, not with the registry

    return token_importance(q, k, scale=scale, mode="mean", chunk_size=chunk_size, lse=lse)  # (B, H, N)


register(Selector("mean", "mean attention received from every query (the paper)", _scores, uses_lse=True))
