"""Preload's LPM pass vs the bare frozen forward, per importance kernel (ratios measured in one process).

    python benchmarks/preload_speed.py --sizes 512 2048                 # CPU, ViT-B/16, random weights
    python benchmarks/preload_speed.py --sizes 512 1024 2048 --device cuda \
        --out benchmarks/results/preload_speed_gpu.json

For each resolution, the same batch goes through (round-robin, `--rounds` times, best time kept):
  bare     timm's forward up to the deepest fused layer (what any feature extraction costs);
  chunked  FrozenLPM with the chunked importance kernel (query-chunked matmuls, today's fallback);
  fused    FrozenLPM with the fused kernel (the layer's own attention returns its log-sum-exp, plus one
           swapped-role fused pass per fused layer).
  dense    FrozenLPM with the dense kernel (each fused layer's attention map materialised once: output and
           importance read it), when the batch's maps fit in 4 GiB.
  openvino, onnxruntime
           (with --engines; CPU) the same pass exported once and run by that runtime (`fptplus.engines`: the dense
           graph in micro-batches where it fits, else the chunked one; the export is cached and not timed), and
           its token agreement with PyTorch's (`verify`, the check a preload runs on its first batch).
  compiled bare, compiled chunked, compiled dense
           (with --compile) the bare forward and the LPM with that kernel through `torch.compile` (inductor; the
           compilation is done by a warm-up call, timed separately and not in the rate).
Every LPM row captures K/V, scores every token, keeps the top m and gathers them (the work of a preload without
decode and disk). It also reports how many selected tokens the two kernels agree on.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from fptplus.backbones.timm_vit import create_vit
from fptplus.engines import map_bytes, token_agreement
from fptplus.lpm import FrozenLPM

SEED = 0  # the random weights (the engines' cached graphs are keyed by them)


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(backbone: str, size: int, batch: int, layers: int, ratio: float, rounds: int, device: str,
            engines: bool = False, weights: Path | None = None, compile_: bool = False) -> dict:  # fmt: skip
    torch.manual_seed(SEED)
    vit = create_vit(backbone, size, weights=weights, device=device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    top = len(vit.blocks) - 1
    kernels = ["chunked", "fused", "dense"]
    lpms = {k: FrozenLPM(vit, backbone, layers, ratio, importance_kernel=k) for k in kernels}
    if batch * map_bytes(lpms["dense"]) > 4 << 30:
        del lpms["dense"]
    kw = dict(indices=[top], stop_early=True, intermediates_only=True, output_fmt="NLC")
    runs = {"bare": lambda: vit.forward_intermediates(x, **kw)} | {k: (lambda k=k: lpms[k](x)) for k in lpms}
    agree = {}
    if engines:
        import fptplus.engines as E

        seed = {"source": str(weights) if weights else f"random, seed {SEED}"}
        for runtime in E.RUNTIMES:
            eng = E._CLASSES[runtime](lpms["chunked"], E.graph_key(lpms["chunked"], seed, {}), log=print)
            problems = eng.verify(x)
            agree[runtime] = json.loads(eng.record.read_text())["token_agreement"]
            print(f"# {runtime} ({eng.kernel} graph, micro-batch {eng.micro}): {problems or 'verified'}", flush=True)
            runs[runtime] = lambda eng=eng: eng(x)
    compile_s = {}
    if compile_:
        runs["compiled bare"] = torch.compile(lambda: vit.forward_intermediates(x, **kw))
        for k in [k for k in ("chunked", "dense") if k in lpms]:
            compiled = torch.compile(lpms[k])
            runs[f"compiled {k}"] = lambda c=compiled: c(x)
    best = {k: float("inf") for k in runs}
    with torch.no_grad():
        out = {k: lpms[k](x) for k in lpms}  # warm-up (and the agreement check)
        vit.forward_intermediates(x, **kw)
        for k in [k for k in runs if k.startswith("compiled")]:
            t0 = time.perf_counter()
            got = runs[k]()
            compile_s[k] = time.perf_counter() - t0
            if k != "compiled bare":
                agree[k] = token_agreement(got.indices, out["chunked"].indices)
            print(f"# {k}: compiled in {compile_s[k]:.0f} s", flush=True)
        for _ in range(rounds):
            for k, fn in runs.items():
                best[k] = min(best[k], timed(fn, device))
    a, b = out["chunked"].indices, out["fused"].indices
    row = {
        "backbone": backbone,
        "img_size": size,
        "tokens": lpms["fused"].spec.num_tokens,
        "batch": batch,
        "fused_layers": layers,
        "img_per_s": {k: batch / t for k, t in best.items()},
        "fraction_of_bare": {k: best["bare"] / best[k] for k in best if k != "bare"},
        "importance_overhead_s_per_img": {k: (best[k] - best["bare"]) / batch for k in lpms},
        "same_token_sets": (a.sort(-1).values == b.sort(-1).values).float().mean().item(),
        "engine_same_token_sets": agree,
        "compile_s": compile_s,
    }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="vit_base_patch16_224")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="per size (default 16 at ≤ 512 px, else 1)")
    ap.add_argument("--layers", type=int, default=6, help="top fused layers (FPT+: 6)")
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--engines", action="store_true", help="also time the exported engines (CPU)")
    ap.add_argument("--weights", type=Path, default=None, help="a timm-format file (default: random weights)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd bare and LPM passes")
    args = ap.parse_args()
    batches = args.batch or [16 if s <= 512 else 1 for s in args.sizes]
    rows = []
    print(f"# {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}")
    print("| backbone | px | N | batch | bare img/s | chunked | fused | dense | openvino | onnxruntime | "
          "chunked = fused tokens |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, batch in zip(args.sizes, batches, strict=True):
        r = measure(args.backbone, size, batch, args.layers, args.ratio, args.rounds, args.device, args.engines,
                    args.weights, args.compile)  # fmt: skip
        rows.append(r)
        ips, frac = r["img_per_s"], r["fraction_of_bare"]
        cells = [f"{ips[k]:.3g} ({100 * frac[k]:.1f} %)" if k in ips else "–" for k in ("chunked", "fused", "dense")]
        for e in ("openvino", "onnxruntime"):
            agree = r["engine_same_token_sets"].get(e)
            cells.append(f"{ips[e]:.3g} ({100 * frac[e]:.1f} %; tokens {100 * agree:.2f} % as PyTorch's)"
                         if e in ips else "–")  # fmt: skip
        print(f"| {r['backbone']} | {size} | {r['tokens']} | {batch} | {ips['bare']:.3g} | {' | '.join(cells)} | "
              f"{100 * r['same_token_sets']:.3f} % |", flush=True)  # fmt: skip
        for k in [k for k in ips if k.startswith("compiled")]:
            agree = r["engine_same_token_sets"].get(k)
            print(f"#   {k}: {ips[k]:.3g} img/s ({100 * frac[k]:.1f} % of the eager bare forward"
                  + (f"; tokens {100 * agree:.2f} % as the eager chunked kernel's)" if agree is not None else ")"),
                  flush=True)  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
