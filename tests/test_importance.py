"""Chunked and fused importance vs a dense float64 reference, and top-k selection."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fptplus.importance as importance
from fptplus.errors import ConfigError
from fptplus.importance import (
    attention_with_lse,
    fused_importance,
    gather_tokens,
    num_selected_tokens,
    select_top_tokens,
    token_importance,
)


def dense_importance(q, k, mode="mean"):
    d = q.shape[-1]
    attn = ((q.double() @ k.double().transpose(-2, -1)) * d**-0.5).softmax(-1)  # (B, H, N, N)
    return attn.mean(-2) if mode == "mean" else attn[:, :, 0]


def qk(B=2, H=3, N=37, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, N, d, generator=g) * 2, torch.randn(B, H, N, d, generator=g) * 2


@pytest.mark.parametrize("chunk", [1, 5, 16, 37, 64, 1000, None])
def test_chunked_equals_dense(chunk):
    q, k = qk()
    got = token_importance(q, k, chunk_size=chunk)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 37)
    torch.testing.assert_close(got.double(), dense_importance(q, k), atol=1e-6, rtol=0)


def test_scores_are_a_distribution_and_cls_mode():
    q, k = qk(N=20)
    torch.testing.assert_close(token_importance(q, k).sum(-1), torch.ones(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        token_importance(q, k, mode="cls").double(), dense_importance(q, k, "cls"), atol=1e-6, rtol=0
    )
    assert not torch.allclose(token_importance(q, k, mode="cls"), token_importance(q, k))


def test_custom_scale_is_used():
    q, k = qk(N=10)
    torch.testing.assert_close(token_importance(q, k, scale=8**-0.5 * 0.5), token_importance(q * 0.5, k))


class MaxNumel(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


@pytest.mark.parametrize("chunk", [8, 33])
def test_chunked_never_materialises_full_map(chunk):
    B, H, N = 1, 2, 257
    q, k = qk(B, H, N)
    with MaxNumel() as mode:
        token_importance(q, k, chunk_size=chunk)
    assert mode.max_numel <= B * H * chunk * N  # one score block
    assert mode.max_numel < B * H * N * N // 4  # far below the dense map


def test_num_selected_tokens():
    assert num_selected_tokens(1025, 0.2) == 205  # ViT-B/16 at 512 px (paper)
    assert num_selected_tokens(100, 0.29) == 29  # floor robust to float error (0.29 * 100 = 28.999...)
    assert num_selected_tokens(10, 1.0) == 10
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ConfigError, match="token_ratio"):
            num_selected_tokens(100, bad)
    with pytest.raises(ConfigError, match="keeps no token"):
        num_selected_tokens(5, 0.1)


def test_select_top_tokens_and_gather():
    scores = torch.rand(2, 3, 50)
    idx = select_top_tokens(scores, 10)
    assert idx.shape == (2, 3, 10)
    for b in range(2):
        for h in range(3):
            chosen = set(idx[b, h].tolist())
            assert len(chosen) == 10
            rest = [scores[b, h, j] for j in range(50) if j not in chosen]
            assert scores[b, h, idx[b, h]].min() >= max(rest)
    x = torch.randn(2, 3, 50, 4)
    got = gather_tokens(x, idx)
    assert torch.equal(got[1, 2, 3], x[1, 2, idx[1, 2, 3]])


# N not a multiple of any kernel block (CPU flash attention uses blocks of 32..512 rows/keys), d incl. odd sizes.
@pytest.mark.parametrize("N,d", [(1, 8), (7, 8), (37, 8), (197, 64), (257, 24), (1025, 64), (1031, 7)])
def test_fused_equals_dense(N, d):
    q, k = qk(B=2, H=3, N=N, d=d, seed=N)
    v = torch.randn_like(q)
    out, lse = attention_with_lse(q, k, v, d**-0.5)  # (B, H, N, d), (B, H, N)
    logits = (q.double() @ k.double().transpose(-2, -1)) * d**-0.5
    torch.testing.assert_close(lse.double(), logits.logsumexp(-1), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=1e-5)
    got = token_importance(q, k, lse=lse)
    ref = dense_importance(q, k)
    assert got.dtype == torch.float32 and got.shape == (2, 3, N)
    # fp32 tolerance relative to the scores' size (they sum to 1 over N tokens)
    torch.testing.assert_close(got.double(), ref, atol=1e-6 / N**0.5, rtol=2e-5)
    assert torch.equal(select_top_tokens(got, max(1, N // 5)).sort(-1).values,
                       select_top_tokens(ref, max(1, N // 5)).sort(-1).values)  # fmt: skip


def test_fused_equals_chunked_in_head_groups(monkeypatch):
    """The swapped-role pass bounded to a few heads at a time gives the same scores as one pass."""
    q, k = qk(B=3, H=4, N=101, d=16, seed=3)
    lse = ((q @ k.transpose(-2, -1)) * 0.25).logsumexp(-1)
    whole = fused_importance(q, k, lse, 0.25)
    monkeypatch.setattr(importance, "FUSED_CHUNK_BYTES", 3 * 101 * 17 * 4 * 5)  # 5 of the 12 heads per pass
    torch.testing.assert_close(fused_importance(q, k, lse, 0.25), whole, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(whole, token_importance(q, k, scale=0.25), atol=1e-7, rtol=1e-5)


def test_fused_importance_never_materialises_the_map():
    B, H, N = 1, 2, 513
    q, k = qk(B, H, N)
    lse = token_importance(q, k).new_zeros(B, H, N)  # any lse: only the sizes matter here
    with MaxNumel() as mode:
        fused_importance(q, k, lse, 0.3)
    assert mode.max_numel <= B * H * N * (8 + 1)  # the (B·H, N, d + 1) operands, nothing N×N
