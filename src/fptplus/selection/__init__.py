"""Which tokens of a fused layer the fine-grained prompts see: the selector seam.

A selector scores every key token of one layer per head (`scores`, (B, H, N)); the frozen model keeps the k best,
best first, so a store built at ratio K serves every ratio r <= K as its first ⌊r·N⌋ rows. One module per
selector, registered by name (`--importance NAME`, recorded in every store's fingerprint):

    mean    the paper's rule: the mean attention a token receives from every query (`importance.token_importance`,
            exact, chunked or through the layer's own fused attention)
    cls     the attention the CLS query pays it
    random  a fixed seeded random ranking per layer and head (the same positions for every image): the ablation
            that asks whether importance matters at all
    all     every token, in their natural order (the ratio must be 1): the ablation without selection

Adding a selector is one module here that calls `register`; its top level imports no torch (the registry is
read by the command line's `--help`), its `scores` function imports what it computes with.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor


class ScoreFn(Protocol):
    def __call__(self, q: Tensor, k: Tensor, *, layer: int, scale: float, chunk_size: int | None,
                 lse: Tensor | None) -> Tensor: ...  # fmt: skip


@dataclass(frozen=True)
class Selector:
    """A registered selector.

    Attributes:
        name: `--importance NAME`.
        summary: one line for help and tables.
        scores: (q, k (B, H, N, d), layer, scale, chunk_size, lse) -> (B, H, N) scores, higher kept first; None for
            a selector that keeps every token (`all`).
        uses_lse: whether it can use the layer's own fused attention's log-sum-exp (the mean rule).
    """

    name: str
    summary: str
    scores: ScoreFn | None
    uses_lse: bool = False

    @property
    def keeps_all(self) -> bool:
        return self.scores is None


_REGISTRY: dict[str, Selector] = {}


def register(selector: Selector) -> Selector:
    if selector.name in _REGISTRY:
        raise ValueError(f"selector {selector.name!r} is already registered")
    _REGISTRY[selector.name] = selector
    return selector


def get_selector(name: str) -> Selector:
    if name not in _REGISTRY:
        raise ConfigError(f"importance must be one of {selector_names()}, got {name!r}")
    return _REGISTRY[name]


def selector_names() -> tuple[str, ...]:
    order = ("mean", "cls", "random", "all")
    return tuple([n for n in order if n in _REGISTRY] + sorted(set(_REGISTRY) - set(order)))


for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
