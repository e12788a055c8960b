"""Peak memory of one steady-state training step (forward, backward, optimizer step) per method.

The step measured is the second one: AdamW creates its state (two moments per trainable parameter) lazily inside
the first `step()`, after that step's activation peak, so a first step misses the optimizer state that every
later step carries (full fine-tuning of ViT-B/16: ~660 MB). The first step runs unmeasured.

Devices:
    meta  exact accounting of live tensor bytes with `MemoryTracker` on shape-only tensors (no memory used):
          any backbone/resolution/batch in seconds on a CPU-only machine.
    cuda  the caching allocator's peak (`torch.cuda.max_memory_allocated`, reset before the step) and its
          reserved peak, plus the tracker's breakdown.
    cpu   the tracker on real CPU tensors (used to validate the meta accounting on small configs).

Attention: "eager" stores the (B, H, N, N) attention map for backward, as the paper's baselines did;
"fused" is timm's default scaled-dot-product attention (on meta: the memory-efficient kernel's own meta
implementation, which keeps only the output and a log-sum-exp per query).

FPT/FPT+ are measured as the paper does: from the feature store (the LPM is not in memory; the batch carries
the stored fp16 K/V) and, separately, online (the LPM's forward inside the step, without gradients).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..memtrack import Breakdown, MemoryTracker, optimizer_tensors
from ..methods import get_method


@dataclass
class MemoryRow:
    method: str
    source: str  # "online" or "store" (FPT/FPT+ only; baselines always run online)
    attention: str
    device: str
    backbone: str
    img_size: tuple[int, int]
    batch_size: int
    breakdown: Breakdown
    cuda_reserved: int | None = None

    @property
    def label(self) -> str:
        return get_method(self.method).label(self.source)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "breakdown"}
        return {**d, "label": self.label, **{f"{k}_mb": v for k, v in self.breakdown.mb().items()},
                "cuda_reserved_mb": self.cuda_reserved / 2**20 if self.cuda_reserved else None}  # fmt: skip


def _fused_meta_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """SDPA through the memory-efficient kernel's meta implementation (what a GPU runs in fp32)."""
    out, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, attn_mask, q.requires_grad or k.requires_grad or v.requires_grad, dropout_p, is_causal, scale=scale
    )
    return out


@contextlib.contextmanager
def attention_mode(model: nn.Module, mode: str, device: str):
    """'eager': every attention (any backbone family's, the side network's) computes the explicit softmax map;
    'fused': SDPA."""
    from ..backbones import set_attention

    restore = set_attention(model, mode)
    patch = contextlib.nullcontext()
    if mode == "fused" and device == "meta":
        from unittest import mock

        patch = mock.patch.object(F, "scaled_dot_product_attention", _fused_meta_sdpa)
    try:
        with patch:
            yield
    finally:
        restore()


def make_batch(method_name: str, model: nn.Module, cfg: Any, batch_size: int, device: str, source: str) -> dict:
    """Random inputs of the method's kind and shapes (its `inputs.example_batch`)."""
    return get_method(method_name).inputs.example_batch(model, cfg, batch_size, device, source)


def _optimizer(model: nn.Module) -> torch.optim.Optimizer | None:
    """AdamW over the trainable parameters; None for a model with none (the kNN probe: its step is a forward)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1) if params else None


def _step(model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer | None) -> None:
    args, kwargs = model.batch_args(batch)
    if optimizer is None:
        with torch.no_grad():
            model(*args, **kwargs)
        return
    F.cross_entropy(model(*args, **kwargs).float(), batch["label"]).backward()
    optimizer.step()


def measure_step(
    method_name: str,
    cfg: Any,
    batch_size: int,
    device: str = "meta",
    attention: str = "fused",
    source: str = "online",
) -> MemoryRow:
    """Peak memory of one steady-state AdamW training step (the second) of `method_name` built from `cfg`.

    Args:
        method_name: registered method.
        cfg: its model config (weights are never loaded: random init, or shapes only on meta).
        batch_size: images per step.
        device: "meta", "cuda" or "cpu".
        attention: "eager" or "fused".
        source: FPT/FPT+ only: "store" (LPM absent, stored K/V in the batch) or "online".
    """
    method = get_method(method_name)
    cfg = dataclasses.replace(cfg, weights=None)
    model = method.build(cfg, device=device, source=source)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(model)
    state = optimizer_tensors(optimizer) if optimizer is not None else []
    tracker = MemoryTracker()
    with attention_mode(model, attention, device):
        batch = make_batch(method_name, model, cfg, batch_size, device, source)
        _step(model, batch, optimizer)  # the first step creates AdamW's state; it is not measured
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            state = optimizer_tensors(optimizer)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tracker.track_module(model)
        for t in [*batch.values(), *state]:
            tracker.track(t)
        with tracker:
            _step(model, batch, optimizer)
    grads = [p.grad for p in params if p.grad is not None]
    weights = [*model.parameters(), *model.buffers()]
    breakdown = tracker.breakdown(weights, grads, state)
    reserved = None
    if device == "cuda":
        torch.cuda.synchronize()
        breakdown.extra["cuda_allocated_peak"] = torch.cuda.max_memory_allocated()
        reserved = torch.cuda.max_memory_reserved()
    return MemoryRow(method_name, source, attention, device, cfg.backbone,
                     tuple(model.spec.img_size), batch_size, breakdown, reserved)  # fmt: skip
