"""How a store keeps its K/V (and pooled features) on disk: one codec per store, named in its fingerprint.

A codec turns the LPM's float tensors of one batch into the arrays written to the shards (`encode_batch`) and a
sample's stored arrays into the tensors training reads (`decode`). Float codecs hand out floats; the int8 codec hands
out int8 codes plus one fp16 scale per (layer, head, token) row (`keys_scale`, `values_scale`), which the prompt
attention decodes one layer at a time (`fptplus.prompt_attention`), so no float copy of all layers ever exists.
Adding a codec is one class here and one entry in CODECS; its name goes into the fingerprint, so a store is only
read with the codec that wrote it. Stores written before codecs were named carry `dtype`, which names the same ones.

    int8: codes = round(x / s), s = max_j |x_j| / 127 over the d values of one (layer, head, token) row,
          s rounded to fp16 before quantising (the decoder uses exactly that s). |x - s·codes| <= s/2 per value.
          Bytes per row: d + 2 (d = 64: 66 B, 25.8 % of the authors' fp32 256 B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ..lpm import KV_FIELDS
from .format import FieldSpec, StoreError
from .options import CodecName  # noqa: F401 (re-exported)

POOLED_FIELDS = ("cls", "patch_mean")  # (D,) each: the final-normed CLS token and mean patch token
FLOAT_FIELDS = (KV_FIELDS[0], KV_FIELDS[2], *POOLED_FIELDS)  # keys, values, pooled: floats in a float codec
SCALE_FIELDS = (KV_FIELDS[1], KV_FIELDS[3])  # keys_scale, values_scale: the int8 codec's per-row scales
INT8_MAX = 127


class Codec(Protocol):
    """What a codec is: it owns the names and shapes of the K/V arrays a store keeps (`fields`), how a batch of the
    frozen model's tensors becomes them (`encode_batch`) and how a stored array is read back (`decode`)."""

    name: str

    @property
    def dtype(self) -> str: ...

    def fields(self, kv_shape: tuple[int, ...], pooled_dim: int | None) -> dict[str, FieldSpec]: ...

    def encode_batch(self, tensors: dict[str, Tensor]) -> dict[str, np.ndarray]: ...

    def decode(self, name: str, stored: np.ndarray) -> Tensor: ...


@dataclass(frozen=True)
class FloatCodec:
    """K/V and pooled features as plain float16 or float32 arrays (float16: half the bytes, ~1e-3 relative
    rounding)."""

    name: str

    @property
    def dtype(self) -> str:
        return self.name

    def fields(self, kv_shape: tuple[int, ...], pooled_dim: int | None) -> dict[str, FieldSpec]:
        """Per-sample arrays for K/V of shape (L, H, k, d) and, when given, the (D,) pooled features."""
        out = {"keys": FieldSpec(self.dtype, kv_shape), "values": FieldSpec(self.dtype, kv_shape)}
        if pooled_dim is not None:
            out |= {name: FieldSpec(self.dtype, (pooled_dim,)) for name in POOLED_FIELDS}
        return out

    def encode(self, name: str, batch: Tensor) -> np.ndarray:
        """A (B, ...) float tensor of field `name` -> the array written to the shard."""
        return batch.to(getattr(torch, self.dtype)).cpu().numpy()

    def encode_batch(self, tensors: dict[str, Tensor]) -> dict[str, np.ndarray]:
        """{keys, values[, cls]} (B, ...) floats -> the arrays written to the shards."""
        return {name: self.encode(name, t) for name, t in tensors.items()}

    def decode(self, name: str, stored: np.ndarray) -> Tensor:
        """One sample's stored array -> a float tensor (no copy for float arrays: a view of the memory map)."""
        return torch.from_numpy(stored)


def quantize_int8(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row of the last dimension: x (..., d) -> codes int8 (..., d), scale fp16 (...)."""
    x = x.float()
    scale = (x.abs().amax(dim=-1) / INT8_MAX).to(torch.float16)  # rounded first: the decoder uses this value
    if not torch.isfinite(scale).all():
        raise StoreError(
            "int8 store: a K/V row exceeds the fp16 scale range (|x| > 8.3e6) or is not finite; store with "
            "--dtype float32 (or float16) instead"
        )
    s = scale.float().unsqueeze(-1)
    codes = torch.where(s > 0, x / s.clamp_min(torch.finfo(torch.float32).tiny), 0.0).round_()
    return codes.clamp_(-INT8_MAX, INT8_MAX).to(torch.int8), scale


def dequantize_int8(codes: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """codes (..., d) int8, scale (...) -> floats (..., d)."""
    return codes.to(dtype) * scale.to(dtype).unsqueeze(-1)


@dataclass(frozen=True)
class Int8Codec:
    """K/V as int8 codes with one fp16 scale per (layer, head, token) row; the pooled features stay float16."""

    name: str = "int8"

    @property
    def dtype(self) -> str:
        return self.name

    def fields(self, kv_shape: tuple[int, ...], pooled_dim: int | None) -> dict[str, FieldSpec]:
        """int8 K/V (L, H, k, d), fp16 scales (L, H, k) and, when given, the fp16 (D,) pooled features."""
        out = {
            "keys": FieldSpec("int8", kv_shape),
            "keys_scale": FieldSpec("float16", kv_shape[:-1]),
            "values": FieldSpec("int8", kv_shape),
            "values_scale": FieldSpec("float16", kv_shape[:-1]),
        }
        if pooled_dim is not None:
            out |= {name: FieldSpec("float16", (pooled_dim,)) for name in POOLED_FIELDS}
        return out

    def encode_batch(self, tensors: dict[str, Tensor]) -> dict[str, np.ndarray]:
        out = {}
        for name, t in tensors.items():
            if name in POOLED_FIELDS:
                out[name] = t.to(torch.float16).cpu().numpy()
                continue
            codes, scale = quantize_int8(t)  # (B, L, H, k, d), (B, L, H, k)
            out[name], out[f"{name}_scale"] = codes.cpu().numpy(), scale.cpu().numpy()
        return out

    def decode(self, name: str, stored: np.ndarray) -> Tensor:
        """Codes and scales are handed out as stored (decoded per layer in the prompt attention)."""
        return torch.from_numpy(stored)


CODECS = {c.name: c for c in (FloatCodec("float16"), FloatCodec("float32"), Int8Codec())}


def codec_of(fingerprint: dict) -> Codec:
    """The codec a store was written with (its fingerprint's `codec`, or `dtype` for stores that predate it)."""
    name = fingerprint.get("codec", fingerprint.get("dtype"))
    if name not in CODECS:
        raise StoreError(f"unknown store codec {name!r}; known: {sorted(CODECS)} (a store from a newer fptplus?)")
    return CODECS[name]
