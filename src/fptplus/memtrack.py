"""Exact accounting of live tensor memory while PyTorch ops run — on any device, the `meta` device included.

`MemoryTracker` is a TorchDispatchMode: every op output whose storage it has not seen is an allocation of
`storage.nbytes()`; a weak reference on the storage's Python object reports its release. Tensors that exist
before the mode (weights, inputs) are registered with `track`. On `meta` tensors nothing is allocated, so a
ViT-L training step at 640 px is "measured" in seconds on any laptop.

The peak is broken down at the end of a step by what the storages alive at the peak moment turned out to be:
weights (parameters and buffers), gradients (`.grad`), optimizer state, and everything else (activations
saved for backward, temporaries, the input batch).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@dataclass
class Breakdown:
    """Bytes at the peak, by kind."""

    peak: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    extra: dict[str, int] = field(default_factory=dict)

    def mb(self) -> dict[str, float]:
        keys = ("peak", "weights", "gradients", "optimizer", "activations")
        return {k: getattr(self, k) / 2**20 for k in keys}


class MemoryTracker(TorchDispatchMode):
    """Live bytes, current and peak, of every storage created or registered while active."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}  # id(storage object) -> nbytes
        self._refs: dict[int, weakref.ref] = {}
        self._token: dict[int, int] = {}  # id(storage object) -> unique number (ids are reused after a free)
        self._next = 0
        self.current = 0
        self.peak = 0
        self.peak_live: dict[int, int] = {}  # token -> nbytes of the storages alive at the peak

    # -- bookkeeping ------------------------------------------------------------------------------------
    def _free(self, key: int) -> None:
        nbytes = self.live.pop(key, None)
        self._refs.pop(key, None)
        self._token.pop(key, None)
        if nbytes is not None:
            self.current -= nbytes

    def track(self, t: torch.Tensor) -> None:
        """Registers a tensor's storage (no-op if already known or not a plain tensor)."""
        if not isinstance(t, torch.Tensor) or t.is_sparse:
            return
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = id(storage)
        if key in self.live and self._refs[key]() is storage:
            return
        self.live[key] = storage.nbytes()
        self._refs[key] = weakref.ref(storage, lambda _, k=key: self._free(k))
        self._token[key] = self._next
        self._next += 1
        self.current += storage.nbytes()
        if self.current > self.peak:
            self.peak = self.current
            self.peak_live = {self._token[k]: n for k, n in self.live.items()}

    def track_module(self, module: nn.Module) -> None:
        for t in [*module.parameters(), *module.buffers()]:
            self.track(t)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self.track(t)
        return out

    # -- classification ---------------------------------------------------------------------------------
    def breakdown(
        self,
        weights: list[torch.Tensor],
        gradients: list[torch.Tensor],
        optimizer: list[torch.Tensor],
    ) -> Breakdown:
        """Splits the peak's live storages by kind (call after the step, before zero_grad)."""

        def keys(tensors: list[torch.Tensor]) -> set[int]:  # tokens of live storages
            ids = {id(t.untyped_storage()) for t in tensors if isinstance(t, torch.Tensor)}
            return {self._token[i] for i in ids if i in self._token}

        w, g, o = keys(weights), keys(gradients), keys(optimizer)
        sizes = {"weights": 0, "gradients": 0, "optimizer": 0, "activations": 0}
        for key, nbytes in self.peak_live.items():
            kind = "weights" if key in w else "gradients" if key in g else "optimizer" if key in o else "activations"
            sizes[kind] += nbytes
        return Breakdown(self.peak, **sizes)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
