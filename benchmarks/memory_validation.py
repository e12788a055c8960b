"""The meta accounting of a steady-state training step against PyTorch's CPU allocator, for every method.

    .venv/bin/python benchmarks/memory_validation.py

ViT-S/16 depth 4 at 224 px, batch 4, 2 classes (FPT/FPT+: 112 px side input, side depth 4). For each method,
source and attention: the meta-accounted peak of the second step minus what exists before it (weights, batch,
optimizer state) next to the CPU allocator's peak above the second step's start (profiler allocation events).
"""

from __future__ import annotations

from fptplus.bench.memory import cpu_allocator_peak, make_batch, measure_step
from fptplus.methods import available_methods, get_method
from fptplus.model import FPTConfig


def main() -> None:
    print(f"{'method':10s} {'source':6s} {'attn':5s} {'meta MiB':>9s} {'CPU MiB':>9s}  diff")
    for method in available_methods():
        m = get_method(method)
        kw = dict(backbone="vit_small_patch16_224", img_size=224, num_classes=2, backbone_kwargs={"depth": 4})
        if issubclass(m.config_cls, FPTConfig):
            kw.update(side_img_size=112, **({"side_depth": 4} if method == "fpt_plus" else {}))
        cfg = m.make_config(**kw)
        for attention in ("eager", "fused"):
            for source in m.sources(cfg):
                row = measure_step(method, cfg, 4, "meta", attention, source)
                model = m.build(cfg, device="meta", source=source)
                batch = make_batch(method, model, cfg, 4, "meta", source)
                before = row.breakdown.weights + row.breakdown.optimizer
                before += sum(t.untyped_storage().nbytes() for t in batch.values())
                meta = row.breakdown.peak - before
                cpu = cpu_allocator_peak(method, cfg, 4, attention, source)
                print(f"{method:10s} {source:6s} {attention:5s} {meta / 2**20:9.2f} {cpu / 2**20:9.2f}  "
                      f"{100 * (meta - cpu) / cpu:+.2f} %", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
