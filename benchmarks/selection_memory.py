"""Peak CPU memory of K/V capture + importance selection vs the bare frozen-backbone forward.

Each measurement runs in a fresh subprocess and reads the kernel's high-water mark (VmHWM) of resident
memory: the peak during the forward minus the resident size just before it (model built, input allocated).

    python benchmarks/selection_memory.py --backbone vit_base_patch16_224 --sizes 1024 2048

Modes:
    bare     timm's own forward up to the deepest fused layer (what any FPT+ forward must pay anyway)
    chunked  FrozenLPM: the same forward + K/V capture + chunked importance + top-k selection (m = 0.2)
    fused    the same with the fused importance kernel (the default where it exists)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def measure(backbone: str, size: int, batch: int, mode: str, layers: int, ratio: float) -> dict:
    import torch

    from fptplus.backbones.timm_vit import create_vit
    from fptplus.lpm import FrozenLPM

    torch.manual_seed(0)
    vit = create_vit(backbone, size)
    kernel = "chunked" if mode == "bare" else mode
    lpm = FrozenLPM(vit, backbone, layers=layers, token_ratio=ratio, importance_kernel=kernel)
    x = torch.randn(batch, 3, size, size)
    before = _status("VmRSS")
    t0 = time.perf_counter()
    with torch.no_grad():
        if mode == "bare":
            vit.forward_intermediates(
                x, indices=[lpm.layers[-1]], stop_early=True, intermediates_only=True, output_fmt="NLC"
            )
            shape = None
        else:
            feats = lpm(x)
            shape = list(feats.keys.shape)
    seconds = time.perf_counter() - t0
    spec = lpm.spec
    return dict(
        backbone=backbone,
        size=size,
        batch=batch,
        mode=mode,
        tokens=spec.num_tokens,
        peak_extra_mib=(_status("VmHWM") - before) / 2**20,
        seconds=seconds,
        kv_shape=shape,
        dense_map_mib=batch * spec.num_heads * spec.num_tokens**2 * 4 / 2**20,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.backbone, int(args.one[0]), args.batch, args.one[1], args.layers, args.ratio)))
        return
    import torch

    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print("| backbone | px | N | mode | peak extra MiB | s | dense (B,H,N,N) fp32 map MiB |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for mode in ("bare", "chunked", "fused"):
            cmd = [sys.executable, __file__, "--backbone", args.backbone, "--batch", str(args.batch)]
            cmd += ["--layers", str(args.layers), "--ratio", str(args.ratio), "--one", str(size), mode]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(
                f"| {r['backbone']} | {size} | {r['tokens']} | {mode} | {r['peak_extra_mib']:.0f} | "
                f"{r['seconds']:.1f} | {r['dense_map_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
