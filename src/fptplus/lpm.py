"""The frozen large pre-trained model (LPM): per-layer K/V capture and important-token selection.

`FrozenLPM` wraps a ViT of any backbone family (`fptplus.backbones`) without changing it. The family's hooks
hand over each fused block's per-head queries, keys (after any q/k normalisation) and values while the model's
own attention runs; once a layer's three are in, the token importance is computed and only the selected K/V of
that layer are kept. The forward stops after the deepest fused block.

Importance kernels (`importance_kernel`): with "fused", the layer's own call to `F.scaled_dot_product_attention` is
answered, inside the LPM's forward only, by a fused kernel that also returns each query's log-sum-exp (same output;
the model's code is untouched: a TorchFunctionMode sees the call), and the importance costs one more fused pass
(`fused_importance`). With "dense", the same call is answered by `dense_attention`: the layer's attention map is
materialised once and both the layer's output and the importance read it (plain tensor ops, so it also holds in a
traced graph: the exported CPU engines run it). When the model does not call SDPA with exactly the captured q/k/v at
the importance's scale (eager attention, a mask), that layer falls back to the chunked kernel. The first fused layer
on each device is checked once against the chunked kernel (a mismatch is an error, never a silent change of the
selected tokens).
"auto" is fused on CUDA and chunked on CPU, where both cost the same (`benchmarks/README.md`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .backbones import LPMSpec, create_backbone, family_of
from .errors import ConfigError
from .importance import (
    attention_with_lse,
    dense_attention,
    fused_kernel_available,
    gather_tokens,
    num_selected_tokens,
    select_top_tokens,
    token_importance,
)
from .model_config import IMPORTANCE_KERNELS, ImportanceKernel
from .selection import get_selector

_FUSED_CHECKED: set[str] = set()  # devices on which the fused kernel agreed with the chunked one
FUSED_CHECK_TOLERANCE = 1e-4  # max |fused - chunked| relative to the largest score


KV_FIELDS = ("keys", "keys_scale", "values", "values_scale")  # the K/V arrays of a batch or a store, by name
# (float K/V: keys and values; int8 codes add one scale per (layer, head, token) row: keys_scale and values_scale)


@dataclass
class LPMFeatures:
    """Selected keys/values of the fused LPM layers for a batch (what preloading stores).

    Attributes:
        keys: (B, L, H, k, d) keys of the selected tokens per fused layer and head.
        values: (B, L, H, k, d) values of the same tokens.
        indices: (B, L, H, k) int64 token positions in the LPM sequence (0..N-1; the first
            `num_prefix_tokens` are CLS/register tokens), best first, or in natural order when no selection.
        cls: (B, D) the LPM's final-normed CLS token when the top fused layer is the LPM's last block (it costs
            one LayerNorm then; the frozen-feature probes read it), else None.
        patch_mean: (B, D) the mean of its final-normed patch tokens, with `cls` (else None).
        key_scale, value_scale: (B, L, H, k) per-row scales when keys/values are int8 codes (an int8 store;
            decoded layer by layer in the prompt attention), else None.
    """

    keys: Tensor
    values: Tensor
    indices: Tensor | None
    cls: Tensor | None = None
    key_scale: Tensor | None = None
    value_scale: Tensor | None = None
    patch_mean: Tensor | None = None
    scores: Tensor | None = None  # (B, L, H, k) the selector's scores of the kept tokens, descending (None: all kept)

    @classmethod
    def from_batch(cls, batch: dict[str, Tensor]) -> LPMFeatures:
        """The stored K/V of a training batch (see KV_FIELDS) as features the fusion reads."""
        return cls(batch["keys"], batch["values"], None, None, batch.get("keys_scale"), batch.get("values_scale"))

    def to(self, *args, **kwargs) -> LPMFeatures:
        """Like Tensor.to for float K/V and cls; int8 codes and their scales only change device."""
        device = torch.empty(0).to(*args, **kwargs).device
        coded = self.key_scale is not None

        def move(t: Tensor | None, keep_dtype: bool) -> Tensor | None:
            return None if t is None else t.to(device) if keep_dtype else t.to(*args, **kwargs)

        return LPMFeatures(
            move(self.keys, coded), move(self.values, coded), move(self.indices, True), move(self.cls, False),
            move(self.key_scale, True), move(self.value_scale, True), move(self.patch_mean, False),
            move(self.scores, False),
        )  # fmt: skip


def resolve_layers(layers: int | Sequence[int] | str, depth: int) -> tuple[int, ...]:
    """Fused LPM layers as sorted 0-based indices.

    Args:
        layers: an int n (the top n layers), "all", or explicit 0-based indices (negatives count from the top).
        depth: number of LPM blocks.
    """
    if isinstance(layers, str):
        if layers != "all":
            raise ConfigError(f"fused layers must be an int, a list of indices or 'all', got {layers!r}")
        return tuple(range(depth))
    if isinstance(layers, int):
        if not 0 <= layers <= depth:
            raise ConfigError(f"cannot fuse the top {layers} layers: the LPM has {depth} layers (use 0..{depth})")
        return tuple(range(depth - layers, depth))
    out = []
    for i in layers:
        if not -depth <= int(i) < depth:
            raise ConfigError(f"fused layer index {i} is out of range for an LPM with {depth} layers")
        out.append(int(i) % depth)
    if len(set(out)) != len(out):
        raise ConfigError(f"fused layer indices {list(layers)} contain duplicates")
    return tuple(sorted(out))


def provides_pooled(spec: LPMSpec, layers: Sequence[int]) -> bool:
    """Whether the forward up to the top fused layer yields the ViT's pooled features (its final-normed CLS token
    and mean patch token): true when that layer is the last block and the ViT has a class token. It then costs one
    LayerNorm and a mean."""
    return layers[-1] == spec.depth - 1 and spec.pooled_cls


class FrozenLPM(nn.Module):
    """A frozen ViT that returns the selected K/V of its fused layers.

    Args:
        vit: a ViT built by its backbone family (at the high resolution, no head). Frozen in place.
        name: its backbone name (picks the family; recorded in `spec`).
        layers: fused block indices (0-based) or an int n for the top n blocks.
        token_ratio: m, the fraction of tokens kept per head (1.0 keeps all, in natural order).
        importance: "mean" (mean attention received from all queries) or "cls" (CLS-row attention).
        chunk_size: query rows per importance chunk; None sizes chunks from a 16 MiB budget.
        importance_kernel: "auto" (fused on CUDA, chunked on CPU), "fused", "chunked" or "dense" (see the module
            docstring). All are exact; ties between equal scores may break differently.
    """

    def __init__(
        self,
        vit: nn.Module,
        name: str,
        layers: int | Sequence[int] | str,
        token_ratio: float = 0.2,
        importance: str = "mean",
        chunk_size: int | None = None,
        importance_kernel: ImportanceKernel = "auto",
    ) -> None:
        super().__init__()
        self.selector = get_selector(importance)
        if importance_kernel not in IMPORTANCE_KERNELS:
            raise ConfigError(f"importance_kernel must be one of {IMPORTANCE_KERNELS}, got {importance_kernel!r}")
        self.vit = vit
        self.family = family_of(name)
        self.spec = self.family.spec(name, vit)
        self.layers = resolve_layers(layers, self.spec.depth)
        if not self.layers:
            raise ConfigError("FrozenLPM needs at least one fused layer (0 fused layers = side network alone)")
        self.token_ratio = float(token_ratio)
        if self.selector.keeps_all and self.token_ratio != 1.0:
            raise ConfigError(f"importance 'all' keeps every token: set token_ratio 1.0 (got {self.token_ratio})")
        self.num_selected = num_selected_tokens(self.spec.num_tokens, self.token_ratio)
        self.importance = importance
        self.chunk_size = chunk_size
        self.importance_kernel = importance_kernel
        self._pending: tuple[int, Tensor, Tensor, Tensor] | None = None  # a layer waiting for its SDPA call
        self._fused = False  # this forward selects with the fused kernel
        self.vit.requires_grad_(False)
        self.vit.eval()
        self._capturing = False
        self._stash: dict[int, dict[str, Tensor]] = {}
        self._selected: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        self._scales = {layer: self.family.attention_scale(vit, layer) for layer in self.layers}
        for layer in self.layers:
            self.family.capture_qkv(vit, layer, self._sink(layer))

    @classmethod
    def from_config(cls, cfg, layers: Sequence[int], device: str | torch.device | None = None) -> FrozenLPM:
        """The frozen LPM of an FPT config (its backbone, weights, resolution, ratio, importance and chunking)."""
        vit = create_backbone(cfg.backbone, cfg.img_size, cfg.weights, device, **cfg.backbone_kwargs)
        return cls(
            vit, cfg.backbone, tuple(layers), cfg.token_ratio, cfg.importance, cfg.importance_chunk,
            cfg.importance_kernel,
        )  # fmt: skip

    @property
    def provides_pooled(self) -> bool:
        """Whether this LPM's forward yields the pooled features (its top fused layer is the last block)."""
        return provides_pooled(self.spec, self.layers)

    def train(self, mode: bool = True) -> FrozenLPM:
        """The LPM stays in eval mode whatever its parent does (no dropout, fixed features)."""
        return super().train(False)

    def _sink(self, layer: int):
        def sink(what: str, tensor: Tensor) -> None:
            if not self._capturing:
                return
            self._flush_pending(unless=layer)
            stash = self._stash.setdefault(layer, {})
            stash[what] = tensor  # (B, H, N, d); q and k after any q/k normalisation
            if len(stash) == 3:
                qkv = self._stash.pop(layer)
                if self._fused:
                    self._pending = (layer, qkv["q"], qkv["k"], qkv["v"])  # selected when its SDPA call comes
                else:
                    self._select(layer, qkv["q"], qkv["k"], qkv["v"])

        return sink

    def _uses_fused(self, device: torch.device) -> bool:
        """Whether this forward selects with the fused kernel (decided once per forward, from the input's device)."""
        no_selection = self.num_selected == self.spec.num_tokens
        if not self.selector.uses_lse or no_selection or self.importance_kernel == "chunked":
            return False
        if self.importance_kernel == "dense":  # plain tensor ops: eager, compiled or exported alike
            return True
        if torch.compiler.is_compiling():  # traced (torch.compile, ONNX export): no data pointers to match
            return False
        available = fused_kernel_available(device)
        if self.importance_kernel == "fused" and not available:
            raise ConfigError(
                f"importance_kernel='fused' has no fused attention kernel on {device.type}; use 'auto' or 'chunked'"
            )
        return available and (self.importance_kernel == "fused" or device.type == "cuda")

    def _flush_pending(self, unless: int | None = None) -> None:
        """A pending layer whose SDPA call never came (eager attention, a mask) is selected by the chunked kernel."""
        if self._pending is not None and self._pending[0] != unless:
            layer, q, k, v = self._pending
            self._pending = None
            self._select(layer, q, k, v)

    def _on_sdpa(self, args: tuple, kwargs: dict) -> Tensor | None:
        """Answers the pending layer's own SDPA call with the lse-returning kernel; None = not ours, call SDPA."""
        if self._pending is None:
            return None
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
        call = dict(zip(names, args, strict=False)) | kwargs
        layer, q, k, v = self._pending
        plain = (
            call.get("attn_mask") is None
            and not call.get("dropout_p")
            and not call.get("is_causal")
            and not call.get("enable_gqa")
        )
        same = all(
            isinstance(call.get(n), Tensor) and _same_view(call[n], t)
            for n, t in (("query", q), ("key", k), ("value", v))
        )
        if not (plain and same):
            return None
        scale = call.get("scale") or q.shape[-1] ** -0.5
        if abs(scale - self._scales[layer]) > 1e-6 * scale:  # the lse must be of the logits the importance scores
            return None
        self._pending = None
        if self.importance_kernel == "dense":
            out, scores = dense_attention(call["query"], call["key"], call["value"], scale)  # (B, H, N, d), (B, H, N)
            self._select(layer, q, k, v, scores=scores)
            return out
        out, lse = attention_with_lse(call["query"], call["key"], call["value"], scale)  # (B, H, N, d), (B, H, N)
        self._select(layer, q, k, v, lse=lse)
        return out

    def _select(self, layer: int, q: Tensor, k: Tensor, v: Tensor, lse: Tensor | None = None,
                scores: Tensor | None = None) -> None:  # fmt: skip
        """Keeps the layer's top tokens; `scores` (B, H, N): the mean-rule importance already computed (dense)."""
        B, H, N, _ = k.shape  # q, k, v: (B, H, N, d)
        if self.num_selected == N:  # ratio 1.0: no selection, natural order
            idx = torch.arange(N, device=k.device).expand(B, H, N)  # (B, H, N)
            self._selected[layer] = (k.detach().clone(), v.detach().clone(), idx)
            return
        if scores is None:
            scores = self.selector.scores(q, k, layer=layer, scale=self._scales[layer], chunk_size=self.chunk_size,
                                          lse=lse)  # (B, H, N), higher kept first  # fmt: skip
        if lse is not None and str(k.device) not in _FUSED_CHECKED:
            check_fused(scores, token_importance(q, k, self._scales[layer], chunk_size=self.chunk_size), k.device)
        idx = select_top_tokens(scores, self.num_selected)  # (B, H, k)
        kept = scores.gather(-1, idx)  # (B, H, k), descending
        self._selected[layer] = (gather_tokens(k, idx), gather_tokens(v, idx), idx, kept)  # (B, H, k, d) x2

    def check_input(self, x: Tensor) -> None:
        """Refuses inputs whose shape is not the resolution the LPM was built for."""
        H, W = self.spec.img_size
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (H, W):
            raise ConfigError(
                f"LPM {self.spec.name} was built for (B, 3, {H}, {W}) inputs, got {tuple(x.shape)}; resize the "
                f"high-resolution view to {H}x{W} or rebuild the LPM at the new size."
            )

    @torch.no_grad()
    def forward(self, x: Tensor) -> LPMFeatures:
        """x: (B, 3, H, W) normalised high-resolution images -> LPMFeatures with (B, L, H, k, d) K/V."""
        self.check_input(x)
        self._stash.clear()
        self._selected.clear()
        self._pending = None
        self._fused = self._uses_fused(x.device)
        self._capturing = True
        last = provides_pooled(self.spec, self.layers)
        try:
            with _SharedAttention(self) if self._fused else contextlib.nullcontext():  # SDPA calls reach the LPM
                pooled = self.family.forward_to(self.vit, x, self.layers[-1], pooled=last)  # (B, D) x2 or None
            self._flush_pending()
        finally:
            self._capturing = False
            self._stash.clear()
            self._pending = None
        selected = [self._selected.pop(layer) for layer in self.layers]
        keys = torch.stack([s[0] for s in selected], dim=1)  # (B, L, H, k, d)
        values = torch.stack([s[1] for s in selected], dim=1)  # (B, L, H, k, d)
        indices = torch.stack([s[2] for s in selected], dim=1)  # (B, L, H, k)
        scores = torch.stack([s[3] for s in selected], dim=1) if len(selected[0]) > 3 else None  # (B, L, H, k)
        pooled_cls, patch_mean = (pooled.cls, pooled.patch_mean) if pooled is not None else (None, None)
        return LPMFeatures(keys, values, indices, pooled_cls, patch_mean=patch_mean, scores=scores)


def _same_view(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors are the same elements of the same memory (the captured q/k/v reaching SDPA)."""
    if a is b:
        return True
    if a.shape != b.shape or a.stride() != b.stride() or a.dtype != b.dtype or a.device != b.device:
        return False
    # a traced graph's tensors have no storage: the same layout within the layer's own call is the test there
    return torch.compiler.is_compiling() or a.data_ptr() == b.data_ptr()


class _SharedAttention(TorchFunctionMode):
    """Within one LPM forward: routes SDPA calls to the LPM so a fused layer's attention also yields its lse."""

    def __init__(self, lpm: FrozenLPM) -> None:
        super().__init__()
        self.lpm = lpm

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            out = self.lpm._on_sdpa(args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def check_fused(fused: Tensor, chunked: Tensor, device: torch.device) -> None:
    """Once per device: the fused kernel's scores must equal the chunked kernel's (fp32 tolerance)."""
    err = ((fused - chunked).abs().max() / chunked.abs().max().clamp_min(1e-30)).item()
    if not err <= FUSED_CHECK_TOLERANCE:
        raise ConfigError(
            f"the fused importance kernel disagrees with the chunked one on {device} (relative error {err:.2e} > "
            f"{FUSED_CHECK_TOLERANCE:g}); use importance_kernel='chunked' (--importance-kernel chunked) and report "
            "this with your torch version"
        )
    _FUSED_CHECKED.add(str(device))
