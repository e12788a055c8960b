"""How a store keeps its K/V (and pooled CLS) on disk: one codec per store, named in its fingerprint.

A codec turns the LPM's float tensors of one batch into the arrays written to the shards (`encode`) and a sample's
stored arrays back into float tensors (`decode`); the rest of fptplus only ever sees decoded floats. Adding a
codec (e.g. int8 with per-token scales) is one class here and one entry in CODECS: its fields may differ (a scale
field next to the values), its name goes into the fingerprint, so a store is only read with the codec that wrote
it. Stores written before codecs were named carry `dtype` in their fingerprint, which names the same codecs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .format import FieldSpec, StoreError

FLOAT_FIELDS = ("keys", "values", "cls")


@dataclass(frozen=True)
class FloatCodec:
    """K/V and CLS as plain float16 or float32 arrays (float16: half the bytes, ~1e-3 relative rounding)."""

    name: str

    @property
    def dtype(self) -> str:
        return self.name

    def fields(self, kv_shape: tuple[int, ...], cls_dim: int | None) -> dict[str, FieldSpec]:
        """Per-sample arrays for K/V of shape (L, H, k, d) and, when given, the (D,) pooled feature."""
        out = {"keys": FieldSpec(self.dtype, kv_shape), "values": FieldSpec(self.dtype, kv_shape)}
        if cls_dim is not None:
            out["cls"] = FieldSpec(self.dtype, (cls_dim,))
        return out

    def encode(self, name: str, batch: Tensor) -> np.ndarray:
        """A (B, ...) float tensor of field `name` -> the array written to the shard."""
        return batch.to(getattr(torch, self.dtype)).cpu().numpy()

    def decode(self, name: str, stored: np.ndarray) -> Tensor:
        """One sample's stored array -> a float tensor (no copy for float arrays: a view of the memory map)."""
        return torch.from_numpy(stored)


CODECS = {c.name: c for c in (FloatCodec("float16"), FloatCodec("float32"))}


def codec_of(fingerprint: dict) -> FloatCodec:
    """The codec a store was written with (its fingerprint's `codec`, or `dtype` for stores that predate it)."""
    name = fingerprint.get("codec", fingerprint.get("dtype"))
    if name not in CODECS:
        raise StoreError(f"unknown store codec {name!r}; known: {sorted(CODECS)} (a store from a newer fptplus?)")
    return CODECS[name]
