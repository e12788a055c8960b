"""Cross-attention of the shared prompt queries over stored (frozen) keys/values, without fp32 copies of K/V.

A plain autograd implementation keeps, for backward, an fp32 copy of every layer's keys and values (the store
delivers fp16) plus a permuted clone for the batched matmul: three times the K/V of the batch. K/V never need
gradients (they come from the frozen LPM), so this Function saves only the fp16 originals and the attention
probabilities (P ≪ k prompts), and re-casts one layer at a time in backward. Same numbers as the plain path
(tested against it and with gradcheck). K/V of an int8 store arrive as codes with one scale per (layer, head,
token) row and are decoded here, one layer at a time, in forward and backward.

    q (L, H, P, d), keys/values (B, L, H, k, d) -> context (B, L, H, P, d), probabilities (B, L, H, P, k)
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import ConfigError


def _layer(kv: Tensor, kv_scale: Tensor | None, layer: int, dtype: torch.dtype) -> Tensor:
    """One layer of stored K or V as floats: (B, L, H, k, d) [+ (B, L, H, k) scales] -> (B, H, k, d)."""
    x = kv[:, layer].to(dtype)
    return x if kv_scale is None else x * kv_scale[:, layer].to(dtype).unsqueeze(-1)


class _PromptAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, keys: Tensor, values: Tensor, scale: float, key_scale=None, value_scale=None):
        B, L, H, k, d = keys.shape
        out = q.new_empty((B, L, H, q.shape[2], d))
        probs = q.new_empty((B, L, H, q.shape[2], k))
        for layer in range(L):  # one layer's fp32 K/V at a time
            kf, vf = _layer(keys, key_scale, layer, q.dtype), _layer(values, value_scale, layer, q.dtype)  # (B,H,k,d)
            p = (torch.matmul(q[layer], kf.transpose(-2, -1)) * scale).softmax(dim=-1)  # (B, H, P, k)
            probs[:, layer] = p
            out[:, layer] = torch.matmul(p, vf)  # (B, H, P, d)
        ctx.save_for_backward(q, keys, values, probs, key_scale, value_scale)
        ctx.scale = scale
        ctx.mark_non_differentiable(probs)
        return out, probs

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_probs: Tensor):
        q, keys, values, probs, key_scale, value_scale = ctx.saved_tensors
        grad_q = torch.zeros_like(q)
        for layer in range(keys.shape[1]):
            kf, vf = _layer(keys, key_scale, layer, q.dtype), _layer(values, value_scale, layer, q.dtype)
            p = probs[:, layer]  # (B, H, P, k)
            grad_p = torch.matmul(grad_out[:, layer], vf.transpose(-2, -1))  # (B, H, P, k)
            grad_logits = p * (grad_p - (grad_p * p).sum(dim=-1, keepdim=True))  # softmax backward
            grad_q[layer] = torch.matmul(grad_logits, kf).sum(dim=0) * ctx.scale  # (H, P, d), summed over B
        return grad_q, None, None, None, None, None


def prompt_attention(
    q: Tensor,
    keys: Tensor,
    values: Tensor,
    scale: float,
    key_scale: Tensor | None = None,
    value_scale: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(q Kᵀ · scale) V per batch item, layer and head; the memory-lean path when K/V need no grad.

    Args:
        q: (L, H, P, d) prompt queries.
        keys, values: (B, L, H, k, d) floats, or int8 codes with their per-row scales.
        key_scale, value_scale: (B, L, H, k) scales of int8 codes (an int8 store), else None.

    Integer K/V without scales are refused (a silent cast of codes would give wrong numbers, not an error).
    """
    for name, kv, s in (("keys", keys, key_scale), ("values", values, value_scale)):
        if kv.is_floating_point() == (s is not None) or (s is not None and kv.dtype != torch.int8):
            raise ConfigError(
                f"prompt attention needs floating-point {name}, or int8 codes with their scales (an int8 store); "
                f"got {kv.dtype} {'with' if s is not None else 'without'} scales: read stored features through "
                "FeatureStore.features / StoreDataset"
            )
    if key_scale is not None or value_scale is not None:
        return _PromptAttention.apply(q, keys, values, scale, key_scale, value_scale)
    if keys.requires_grad or values.requires_grad:  # K/V that train (not from the LPM): plain autograd
        logits = torch.einsum("lhpd,blhkd->blhpk", q, keys.to(q.dtype)) * scale  # (B, L, H, P, k)
        probs = logits.softmax(dim=-1)
        return probs @ values.to(q.dtype), probs  # (B, L, H, P, d), (B, L, H, P, k)
    return _PromptAttention.apply(q, keys, values, scale)
