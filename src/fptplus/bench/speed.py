"""Throughput: training samples/s per method, and preload (LPM + K/V selection) vs the bare frozen forward.

Random weights and random inputs of the real shapes on the chosen device; one warm-up step, then the mean
over `steps` timed steps. FPT/FPT+ are timed from the store (the batch carries fp16 K/V, as the store
delivers them) and online (the LPM's forward inside the step).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..lpm import FrozenLPM
from ..methods import get_method
from .memory import make_batch


@dataclass
class SpeedRow:
    label: str
    samples_per_s: float
    seconds_per_step: float
    batch_size: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_speed(method_name: str, cfg: Any, batch_size: int, steps: int, device: str, source: str) -> SpeedRow:
    method = get_method(method_name)
    cfg = dataclasses.replace(cfg, weights=None)
    model = method.build(cfg, device=device, source=source).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = make_batch(method_name, model, cfg, batch_size, device, source)
    args, kwargs = model.batch_args(batch)
    times = []
    for i in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        F.cross_entropy(model(*args, **kwargs).float(), batch["label"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i:  # the first step warms up (kernels, lazy optimizer state)
            times.append(time.perf_counter() - t0)
    per_step = sum(times) / len(times)
    label = method.label(source)
    return SpeedRow(label, batch_size / per_step, per_step, batch_size, device)


def preload_speed(cfg: Any, batch_size: int, steps: int, device: str) -> tuple[SpeedRow, SpeedRow]:
    """(bare frozen forward up to the deepest fused layer, FrozenLPM forward with K/V capture + selection)."""
    from ..backbones import lpm_spec
    from ..model import FusionPlan

    cfg = dataclasses.replace(cfg, weights=None)
    plan = FusionPlan.resolve(cfg, lpm_spec(cfg.backbone, cfg.img_size, cfg.backbone_kwargs).depth)
    lpm = FrozenLPM.from_config(cfg, plan.lpm_layers, device)
    x = torch.randn(batch_size, 3, *lpm.spec.img_size, device=device)
    top = plan.lpm_layers[-1]
    rows = []
    for label, fn in (("bare frozen forward", lambda: lpm.family.forward_to(lpm.vit, x, top, with_cls=False)),
                      ("preload", lambda: lpm(x))):  # fmt: skip
        times = []
        with torch.no_grad():
            for i in range(steps + 1):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                if i:
                    times.append(time.perf_counter() - t0)
        per = sum(times) / len(times)
        rows.append(SpeedRow(label, batch_size / per, per, batch_size, device))
    return rows[0], rows[1]
