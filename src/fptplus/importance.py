"""Token importance from self-attention, computed in query chunks, and top-k token selection.

The importance of key token j for head h is the attention that the queries pay to it (paper §3.5):

    mean mode:  s[b, h, j] = 1/N · Σ_i softmax_j(q_i · k_j · scale)   (every query, CLS and self included)
    cls mode:   s[b, h, j] = softmax_j(q_0 · k_j · scale)             (the CLS row only)

The mean mode never materialises the (B, H, N, N) map. Two exact ways to get it:

    fused    from the row log-sum-exp lse_i of the layer's own attention (a fused kernel returns it with the
             attention output, so the layer's pass is shared), the column sums are the normaliser of one more
             fused-attention pass with the roles of queries and keys swapped and a per-key bias -lse_i, folded
             into one extra head dimension:
                 Σ_i exp(s·q_i·k_j − lse_i) = Σ_i exp([k_j, 1]·[s·q_i, −lse_i]) = exp(lse'_j)
             so importance_j = exp(lse'_j) / N (`fused_importance`; `attention_with_lse` gives the first pass).
    chunked  queries are processed in blocks of (a few heads × `chunk` query rows × N keys), at most 16 MiB
             unless one head's rows alone need more (the fallback where no fused kernel returns the lse).
    dense    the layer's attention map P = softmax(s·q·kᵀ) is materialised once (`dense_attention`): the layer's
             output is P·v and the importance is P's column mean, so the importance costs no extra pass; memory is
             B·H·N² floats per layer (the exported CPU engines run this graph, `fptplus.engines`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .errors import ConfigError

ImportanceMode = Literal["mean", "cls"]
IMPORTANCE_MODES: tuple[str, ...] = ("mean", "cls")
# The swapped-role pass handles at most this many bytes of (B·H, N, d + 1) operands at once.
FUSED_CHUNK_BYTES = 64 * 2**20

# One score block holds at most this many bytes (several heads × some query rows × N keys).
DEFAULT_CHUNK_BYTES = 16 * 2**20
# Minimum work of one head's row block (rows × N): smaller matmuls were measurably slower on CPU.
MIN_BLOCK_ELEMENTS = 2**16


def block_shape(groups: int, num_tokens: int, rows: int | None = None, budget_bytes: int = DEFAULT_CHUNK_BYTES):
    """(heads per block, query rows per block) for `groups` = B·H heads of N tokens within the byte budget.

    By default the rows are what the budget allows with every head in one block, but at least enough that
    one head's block holds MIN_BLOCK_ELEMENTS scores; heads are then grouped up to the budget. (Measured on a
    2-core CPU: N = 16385 favours all 12 heads × 21 rows, batch 16 at N = 1025 favours 64 rows × 64 heads.)
    """
    if rows is None:
        rows = max(-(-MIN_BLOCK_ELEMENTS // num_tokens), budget_bytes // (groups * num_tokens * 4))
    rows = max(1, min(num_tokens, rows))
    heads = max(1, min(groups, budget_bytes // (rows * num_tokens * 4)))
    return heads, rows


def _lse_kernel(device: torch.device):
    """The fused attention op that returns the per-query log-sum-exp on this device, or None."""
    if device.type == "cpu":
        return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if device.type == "cuda":
        return getattr(torch.ops.aten, "_scaled_dot_product_efficient_attention", None)
    return None


def fused_kernel_available(device: torch.device | str) -> bool:
    """Whether `attention_with_lse` / `fused_importance` have a fused kernel on this device."""
    return _lse_kernel(torch.device(device)) is not None


def attention_with_lse(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """softmax(s·q·kᵀ)·v and the per-query log-sum-exp from one fused kernel (no N×N map).

    Args:
        q, k, v: (B, H, N, d); scale: s.

    Returns:
        the attention output (B, H, N, d) in q's dtype (what F.scaled_dot_product_attention returns) and the
        fp32 log-sum-exp (B, H, N) of the scaled logits of each query row.
    """
    op = _lse_kernel(q.device)
    if op is None:
        raise ConfigError(
            f"no fused attention kernel returns the log-sum-exp on {q.device.type}; use the chunked kernel"
        )
    N = q.shape[-2]
    if q.device.type == "cpu":
        out, lse = op(q, k, v, 0.0, False, scale=scale)
    else:  # CUDA memory-efficient kernel: (out, lse (B, H, ≥N) padded to its block, seed, offset)
        out, lse = op(q, k, v, None, True, 0.0, False, scale=scale)[:2]
    return out, lse[..., :N].float()


def dense_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """softmax(s·q·kᵀ)·v and the mean-mode importance, both read from one materialised attention map.

    Args:
        q, k, v: (B, H, N, d); scale: s.

    Returns:
        the attention output (B, H, N, d) in q's dtype and the fp32 importance (B, H, N) (each row sums to 1),
        equal to `token_importance(q, k, scale)` to fp32 rounding.
    """
    probs = ((q.float() * scale) @ k.float().transpose(-2, -1)).softmax(dim=-1)  # (B, H, N, N): the one big buffer
    return (probs @ v.float()).to(q.dtype), probs.mean(dim=-2)  # (B, H, N, d), (B, H, N)


def _pad8(x: Tensor) -> Tensor:
    """Zero-pads the head dimension to a multiple of 8 (some CUDA kernels need it; zeros change no dot product)."""
    extra = -x.shape[-1] % 8
    return torch.nn.functional.pad(x, (0, extra)) if extra and x.device.type == "cuda" else x


def fused_importance(q: Tensor, k: Tensor, lse: Tensor, scale: float) -> Tensor:
    """Mean-mode importance from the layer's log-sum-exp with one swapped-role fused-attention pass.

    Args:
        q, k: (B, H, N, d) queries and keys of the layer (after any q/k normalisation).
        lse: (B, H, N) log Σ_j exp(s·q_i·k_j) per query (from `attention_with_lse`).
        scale: s.

    Returns:
        fp32 scores (B, H, N), equal to `token_importance(q, k, scale)` to fp32 rounding.
    """
    op = _lse_kernel(q.device)
    if op is None:
        raise ConfigError(f"no fused attention kernel on {q.device.type}; use the chunked importance kernel")
    B, H, N, d = q.shape
    G = B * H
    q2 = q.reshape(G, N, d)
    k2 = k.reshape(G, N, d)
    lse2 = lse.reshape(G, N, 1).float()
    out = q.new_empty((G, N), dtype=torch.float32)
    step = max(1, FUSED_CHUNK_BYTES // (3 * N * (d + 1) * 4))  # heads per pass: 3 operands of (N, d + 1) fp32
    for g0 in range(0, G, step):
        sl = slice(g0, g0 + step)
        new_q = _pad8(torch.cat([k2[sl].float(), torch.ones_like(lse2[sl])], dim=-1))  # (g, N, d + 1): [k_j, 1]
        new_k = _pad8(torch.cat([q2[sl].float() * scale, -lse2[sl]], dim=-1))  # (g, N, d + 1): [s·q_i, -lse_i]
        if q.device.type == "cpu":
            _, lse_t = op(new_q[None], new_k[None], new_k[None], 0.0, False, scale=1.0)  # (1, g, N)
        else:
            lse_t = op(new_q[None], new_k[None], new_k[None], None, True, 0.0, False, scale=1.0)[1]
        out[sl] = lse_t[0, :, :N].float().exp()  # Σ_i softmax(q_i)_j, i.e. N · importance_j
    return (out / N).view(B, H, N)


def token_importance(
    q: Tensor,
    k: Tensor,
    scale: float | None = None,
    mode: ImportanceMode = "mean",
    chunk_size: int | None = None,
    lse: Tensor | None = None,
) -> Tensor:
    """Per-head importance of every key token.

    Args:
        q: queries (after any q normalisation), (B, H, N, d).
        k: keys (after any k normalisation), (B, H, N, d).
        scale: attention scale; defaults to d ** -0.5 (what timm's Attention uses).
        mode: "mean" (mean attention received over all queries) or "cls" (attention from the CLS query).
        chunk_size: query rows per block in "mean" mode (default: see `block_shape`); heads are grouped into
            one block up to a 16 MiB budget, so the extra memory is O(chunk · N), far below the (B, H, N, N) map.
        lse: (B, H, N) log-sum-exp of each query's scaled logits (from the layer's own fused attention): "mean"
            mode then uses `fused_importance` (one swapped-role fused pass) instead of the chunks.

    Returns:
        fp32 scores (B, H, N); each (b, h) row sums to 1.
    """
    if mode not in IMPORTANCE_MODES:
        raise ConfigError(f"importance mode must be one of {IMPORTANCE_MODES}, got {mode!r}")
    B, H, N, d = q.shape
    scale = d**-0.5 if scale is None else scale
    k_t = k.float().contiguous().transpose(-2, -1)  # (B, H, d, N); contiguous once, not per chunk
    if mode == "cls":
        logits = (q[:, :, :1].float() * scale) @ k_t  # (B, H, 1, N)
        return logits.softmax(dim=-1)[:, :, 0]  # (B, H, N)

    if lse is not None:
        return fused_importance(q, k, lse, scale)
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"importance chunk size must be >= 1, got {chunk_size}")
    G = B * H
    if torch.compiler.is_exporting():  # a traced graph (ONNX) keeps the batch symbolic: every head in each block
        heads = [slice(None)]
        c = chunk_size or max(1, DEFAULT_CHUNK_BYTES // (H * N * 4))
    else:
        g, c = block_shape(G, N, chunk_size)
        heads = [slice(h0, h0 + g) for h0 in range(0, G, g)]
    q2 = q.reshape(G, N, d)  # (B·H, N, d)
    k_t = k_t.reshape(G, d, N)  # (B·H, d, N)
    scores = q.new_zeros((G, 1, N), dtype=torch.float32)
    for hs in heads:
        for start in range(0, N, c):
            qc = q2[hs, start : start + c].float() * scale  # (g, c, d)
            block = torch.bmm(qc, k_t[hs])  # (g, c, N): the only large buffer
            block -= block.amax(dim=-1, keepdim=True)
            block.exp_()
            inv_den = block.sum(dim=-1, keepdim=True).reciprocal_()  # (g, c, 1)
            # Σ_i softmax(row i) = (1/den)ᵀ @ exp-block, without a second block-sized buffer.
            scores[hs] += torch.bmm(inv_den.transpose(1, 2), block)  # (g, 1, N)
            del block
    return (scores[:, 0] / N).view(B, H, N)


def num_selected_tokens(num_tokens: int, ratio: float) -> int:
    """⌊ratio · N⌋, the number of tokens kept per head; refuses ratios that keep nothing."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"token_ratio must be in (0, 1], got {ratio}")
    k = int(ratio * num_tokens + 1e-9) if ratio < 1.0 else num_tokens
    if k < 1:
        raise ConfigError(
            f"token_ratio {ratio} keeps no token out of {num_tokens}; use a ratio >= {1 / num_tokens:.4g}"
        )
    return k


def select_top_tokens(scores: Tensor, k: int) -> Tensor:
    """Indices of the k highest-scoring tokens per head, best first.

    Args:
        scores: (B, H, N).
        k: tokens to keep, 1 <= k <= N.

    Returns:
        int64 indices (B, H, k), distinct within each (b, h).
    """
    return scores.topk(k, dim=-1, largest=True, sorted=True).indices  # (B, H, k)


def gather_tokens(x: Tensor, indices: Tensor) -> Tensor:
    """Picks tokens per head: x (B, H, N, d), indices (B, H, k) -> (B, H, k, d)."""
    d = x.shape[-1]
    return x.gather(2, indices.unsqueeze(-1).expand(*indices.shape, d))  # (B, H, k, d)
