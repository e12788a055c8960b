"""Memory tables over methods (`fptplus bench memory`) and the CPU-allocator check of the accounting.

One step's peak (`measure_step`, the meta-device accounting) lives in `fptplus.trainer.step_memory`, where every
run also records its own (`train_step_mb` in results.json).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..methods import get_method
from ..trainer.step_memory import (
    MemoryRow,
    _optimizer,
    _step,
    attention_mode,
    make_batch,
    measure_step,
)


def memory_table(
    methods: list[str],
    backbone: str,
    img_size,
    batch_size: int,
    device: str = "meta",
    attentions: tuple[str, ...] = ("eager", "fused"),
    num_classes: int = 2,
    backbone_kwargs: dict | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[MemoryRow]:
    """One row per method (FPT/FPT+: store and online) and attention implementation.

    `overrides` sets model-config fields on every method that has them (e.g. {"side_depth": 2}).
    """
    rows = []
    for attention in attentions:
        for name in methods:
            method = get_method(name)
            fields = {f.name for f in dataclasses.fields(method.config_cls)}
            extra = {k: v for k, v in (overrides or {}).items() if k in fields}
            cfg = method.make_config(backbone=backbone, img_size=img_size, num_classes=num_classes,
                                     backbone_kwargs=dict(backbone_kwargs or {}), **extra)  # fmt: skip
            for source in method.sources(cfg):
                rows.append(measure_step(name, cfg, batch_size, device, attention, source))
    return rows


def cpu_allocator_peak(
    method_name: str, cfg: Any, batch_size: int, attention: str = "fused", source: str = "online"
) -> int:
    """Peak bytes the CPU allocator held above the second step's start, read from the profiler's allocation events.

    An independent check of the meta accounting: it counts every allocation of PyTorch's CPU allocator
    (kernel-internal temporaries included) during one real steady-state training step (after an unprofiled first
    step). Weights, the batch and the optimizer state exist before the step, so compare with `Breakdown.peak`
    minus them.
    """
    import gc
    import json
    import tempfile
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    gc.collect()  # earlier models must not be freed in the middle of the measured step
    method = get_method(method_name)
    cfg = dataclasses.replace(cfg, weights=None)
    model = method.build(cfg, device="cpu", source=source).train()
    optimizer = _optimizer(model)
    batch = make_batch(method_name, model, cfg, batch_size, "cpu", source)
    with attention_mode(model, attention, "cpu"):
        _step(model, batch, optimizer)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        gc.collect()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            _step(model, batch, optimizer)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    mem = sorted(
        (e for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0),
        key=lambda e: e["ts"],
    )
    current = peak = 0  # running sum of allocations (+) and frees (-) since the step began
    for e in mem:
        current += e["args"]["Bytes"]
        peak = max(peak, current)
    return peak
