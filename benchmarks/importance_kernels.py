"""One fused layer's attention and importance, per way of computing them (seconds; the per-layer view behind
`preload_speed.py`).

    python benchmarks/importance_kernels.py --tokens 4097 16385

Per N (12 heads, d = 64; batch 16 at N ≤ 1025, else 1), best of 2 after a warm-up:
  sdpa      the layer's own attention (F.scaled_dot_product_attention)
  chunked   fptplus's chunked importance kernel (query blocks of all keys)
  swapped   the fused kernel's extra pass: flash attention with q' = [k, 1], k' = [s·q, -lse] (lse precomputed)
  onepass   attention output and column sums from one materialised (rows × N) block per query chunk (bmm), i.e.
            the layer's attention and its importance without a second score pass
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from fptplus.importance import attention_with_lse, block_shape, fused_importance, token_importance


def best(fn, n: int = 2) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def onepass(q, k, v, s):
    B, H, N, d = q.shape
    G = B * H
    g, c = block_shape(G, N)
    q2, kt, v2 = q.reshape(G, N, d), k.reshape(G, N, d).transpose(1, 2).contiguous(), v.reshape(G, N, d)
    out, col = torch.empty_like(q2), q.new_zeros(G, 1, N)
    for h0 in range(0, G, g):
        for st in range(0, N, c):
            blk = torch.bmm(q2[h0 : h0 + g, st : st + c], kt[h0 : h0 + g]).mul_(s)  # (g, c, N)
            blk -= blk.amax(-1, keepdim=True)
            blk.exp_()
            inv = blk.sum(-1, keepdim=True).reciprocal_()
            torch.mul(torch.bmm(blk, v2[h0 : h0 + g]), inv, out=out[h0 : h0 + g, st : st + c])
            col[h0 : h0 + g] += torch.bmm(inv.transpose(1, 2), blk)
    return out.view(B, H, N, d), (col[:, 0] / N).view(B, H, N)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1025, 4097])
    args = ap.parse_args()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| N | batch | sdpa s | chunked s | swapped s | onepass s | max rel. error fused / onepass vs chunked |")
    print("|---|---|---|---|---|---|---|")
    for N in args.tokens:
        print(row(N), flush=True)


def row(N: int) -> str:
    B, H, d = (16 if N <= 1025 else 1), 12, 64
    s = d**-0.5
    q, k, v = (torch.randn(B, H, N, d) for _ in range(3))
    _, lse = attention_with_lse(q, k, v, s)
    ref = token_importance(q, k, s)
    err = [((x - ref).abs().max() / ref.max()).item() for x in (fused_importance(q, k, lse, s), onepass(q, k, v, s)[1])]
    runs = (
        lambda: F.scaled_dot_product_attention(q, k, v),
        lambda: token_importance(q, k, s),
        lambda: fused_importance(q, k, lse, s),
        lambda: onepass(q, k, v, s),
    )
    times = " | ".join(f"{best(f):.3g}" for f in runs)
    return f"| {N} | {B} | {times} | {err[0]:.1e} / {err[1]:.1e} |"


if __name__ == "__main__":
    main()
