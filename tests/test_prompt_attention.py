"""The memory-lean prompt cross-attention equals the plain autograd computation, values and gradients."""

from __future__ import annotations

import torch

from fptplus.memtrack import MemoryTracker
from fptplus.prompt_attention import _PromptAttention, prompt_attention


def inputs(dtype=torch.float32, kv_dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(3, 4, 5, 8, generator=g, dtype=dtype).requires_grad_()
    keys = torch.randn(2, 3, 4, 11, 8, generator=g).to(kv_dtype)
    values = torch.randn(2, 3, 4, 11, 8, generator=g).to(kv_dtype)
    return q, keys, values


def plain(q, keys, values, scale):
    probs = (torch.einsum("lhpd,blhkd->blhpk", q, keys.to(q.dtype)) * scale).softmax(-1)
    return probs @ values.to(q.dtype), probs


def test_forward_and_backward_equal_plain_autograd():
    q, keys, values = inputs()
    out, probs = prompt_attention(q, keys, values, 8**-0.5)
    q2 = q.detach().clone().requires_grad_()
    want, want_probs = plain(q2, keys, values, 8**-0.5)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(probs, want_probs)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(q.grad, q2.grad)


def test_gradcheck_in_double():
    q, keys, values = inputs(torch.float64, torch.float64)
    assert torch.autograd.gradcheck(lambda x: _PromptAttention.apply(x, keys, values, 0.3)[0], (q,))


def test_trainable_keys_fall_back_to_autograd():
    q, keys, values = inputs(kv_dtype=torch.float32)
    keys.requires_grad_()
    out, _ = prompt_attention(q, keys, values, 0.5)
    out.sum().backward()
    assert keys.grad is not None


def test_keeps_no_fp32_copy_of_the_keys_and_values():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(6, 4, 16, 64, generator=g).requires_grad_()  # FPT+-like: P = 16 prompts, d = 64
    keys = torch.randn(2, 6, 4, 205, 64, generator=g).half()
    values = torch.randn(2, 6, 4, 205, 64, generator=g).half()
    peaks = []
    for fn in (prompt_attention, plain):
        tracker = MemoryTracker()
        for t in (q, keys, values):
            tracker.track(t)
        with tracker:
            out, _ = fn(q, keys, values, 0.3)
            out.sum().backward()
        peaks.append(tracker.peak)
        q.grad = None
    given = sum(t.untyped_storage().nbytes() for t in (q, keys, values))
    fp32_kv = 4 * keys.untyped_storage().nbytes()  # fp32 copies of K and V: 2 × (2 × fp16 bytes)
    assert peaks[0] - given < fp32_kv < peaks[1] - given  # only the plain path ever holds a full fp32 K/V
