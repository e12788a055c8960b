"""Fine-grained prompts and fusion modules (paper §3.4, eq. 7–8).

For each fused layer l the P learnable prompts p_l summarise that layer's selected LPM keys/values by
cross-attention and are projected to the side network's width:

    base_l = f_in(p_l)                          (L, P, D)   FPT+: identity (p_l already has width D)
    q_l    = norm(base_l) split into H heads    (L, H, P, d) FPT+: one LayerNorm shared by all layers
    ctx_l  = softmax(q_l K̂_lᵀ / √d) V̂_l        (B, L, H, P, d), no query projection
    FPT+:  out_l = dropout(f_out(ctx_l + p_l))  (B, L, P, D/k), f_out: ONE Linear(D → D/k) shared by all layers
    FPT:   out_l = dropout(f_out(ctx_l) + p_l)  eq. (7) as written: p_l has the side width D/k

FPT (the earlier method) is the same module with prompts of width D/k, a shared in-projector
f_in = Linear(D/k → D) and no norm; its prompts are added after the out-projector, as eq. (7) writes it and as
the authors' code does when the prompt width differs from the LPM width. For FPT+ eq. (7)'s "+p" after f_out
cannot type-check (p has width D, the output D/k): the authors' FPT+ code adds the prompts before f_out, and so
does this module (its FPT+ forward matches theirs to float precision).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .prompt_attention import prompt_attention


@dataclass(frozen=True)
class FusionOutput:
    """prompts: (B, L, P, D_s) fused prompts; attn: (B, L, H, P, k) cross-attention (only when asked)."""

    prompts: Tensor
    attn: Tensor | None = None


class FineGrainedFusion(nn.Module):
    """Fine-grained prompts + fusion modules for L fused layers.

    Args:
        num_layers: L, fused layers.
        lpm_dim: D, LPM width.
        num_heads: H, LPM heads (the query LN(p) is split into these).
        side_dim: D_s = D / k, side network width.
        num_prompts: P per layer.
        prompt_dim: width of the learnable prompts: D (FPT+) or D_s (FPT, then an in-projector D_s → D).
        prompt_norm: LayerNorm on the prompts before they act as queries (FPT+).
        dropout: dropout on the fused prompts (after f_out).
        init_std: prompts ~ N(0, init_std²).
    """

    def __init__(
        self,
        num_layers: int,
        lpm_dim: int,
        num_heads: int,
        side_dim: int,
        num_prompts: int = 16,
        prompt_dim: int | None = None,
        prompt_norm: bool = True,
        dropout: float = 0.5,
        init_std: float = 1e-6,
    ) -> None:
        super().__init__()
        if lpm_dim % num_heads:
            raise ConfigError(f"LPM width {lpm_dim} is not divisible by its {num_heads} heads")
        if num_layers < 1 or num_prompts < 1:
            raise ConfigError(f"need >= 1 fused layer and >= 1 prompt, got {num_layers} and {num_prompts}")
        prompt_dim = lpm_dim if prompt_dim is None else prompt_dim
        self.num_layers, self.num_prompts, self.num_heads = num_layers, num_prompts, num_heads
        self.lpm_dim, self.side_dim, self.head_dim = lpm_dim, side_dim, lpm_dim // num_heads
        self.prompts = nn.Parameter(torch.empty(num_layers, num_prompts, prompt_dim))  # (L, P, D_p)
        nn.init.normal_(self.prompts, std=init_std)
        self.in_proj = nn.Linear(prompt_dim, lpm_dim) if prompt_dim != lpm_dim else nn.Identity()
        self.norm = nn.LayerNorm(lpm_dim) if prompt_norm else nn.Identity()
        self.out_proj = nn.Linear(lpm_dim, side_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        keys: Tensor,
        values: Tensor,
        return_attn: bool = False,
        key_scale: Tensor | None = None,
        value_scale: Tensor | None = None,
    ) -> FusionOutput:
        """keys, values: (B, L, H, k, d) selected LPM K/V (floats, or int8 codes with (B, L, H, k) scales from an
        int8 store) -> fused prompts (B, L, P, D_s)."""
        B, L, H, k, d = keys.shape
        if (L, H, d) != (self.num_layers, self.num_heads, self.head_dim):
            raise ConfigError(
                f"K/V of shape (B, L={L}, H={H}, k={k}, d={d}) do not fit fusion modules built for "
                f"L={self.num_layers} layers, H={self.num_heads} heads, d={self.head_dim}; the features come "
                "from a different LPM or layer set than this model"
            )
        base = self.in_proj(self.prompts)  # (L, P, D)
        q = self.norm(base)  # (L, P, D)
        q = q.view(L, self.num_prompts, H, d).transpose(1, 2)  # (L, H, P, d)
        ctx, attn = prompt_attention(q, keys, values, d**-0.5, key_scale, value_scale)  # (B,L,H,P,d), (B,L,H,P,k)
        ctx = ctx.transpose(2, 3).reshape(B, L, self.num_prompts, self.lpm_dim)  # (B, L, P, D)
        if isinstance(self.in_proj, nn.Identity):  # noqa: SIM108  FPT+: width-D prompts, residual before f_out
            out = self.out_proj(ctx + base)  # (B, L, P, D_s)
        else:  # FPT: prompts of width D_s, added after it (eq. 7)
            out = self.out_proj(ctx) + self.prompts  # (B, L, P, D_s) + (L, P, D_s)
        return FusionOutput(self.dropout(out), attn if return_attn else None)
