"""The random ablation: a fixed seeded ranking of the positions per layer and head, the same for every image (so a
store of it is reproducible and its prefixes are random subsets of the same size as the paper's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import Selector, register

if TYPE_CHECKING:
    from torch import Tensor

SEED = 20_260_101


def _scores(q: Tensor, k: Tensor, *, layer: int, scale: float, chunk_size: int | None, lse: Tensor | None) -> Tensor:
    import torch  # loads with the model, not with the registry

    B, H, N, _ = k.shape
    g = torch.Generator().manual_seed(SEED + layer)
    ranking = torch.rand(H, N, generator=g)  # (H, N): one fixed draw per layer
    return ranking.to(k.device).expand(B, H, N)


register(Selector("random", "a fixed seeded random ranking per layer and head (ablation)", _scores))
