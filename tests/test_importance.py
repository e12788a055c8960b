"""Chunked importance vs a dense float64 reference, and top-k selection."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fptplus.errors import ConfigError
from fptplus.importance import gather_tokens, num_selected_tokens, select_top_tokens, token_importance


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
