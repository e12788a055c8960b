"""The memory tracker on hand-built computations with known allocation sizes, and against the CPU allocator."""

from __future__ import annotations

import pytest
import torch

from fptplus.bench.memory import cpu_allocator_peak, make_batch, measure_step
from fptplus.memtrack import MemoryTracker
from fptplus.methods import get_method
from fptplus.model import FPTConfig


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_known_allocations(device):
    tracker = MemoryTracker()
    with tracker:
        a = torch.empty(1000, device=device)  # 4000 B
        b = a * 2  # +4000 -> 8000
        c = b.view(10, 100)  # a view: no new storage
        del a  # -> 4000
        d = torch.empty(500, dtype=torch.float64, device=device)  # +4000 -> 8000
        e = torch.cat([c.flatten(), c.flatten()])  # +8000 -> 16000 (peak)
        del b, c, e  # -> 4000
        f = d.half()  # +1000 -> 5000
    assert tracker.peak == 16000
    assert tracker.current == 5000
    del d, f
    assert tracker.current == 0


def test_inplace_and_registered_tensors():
    x = torch.ones(256)
    tracker = MemoryTracker()
    tracker.track(x)
    tracker.track(x)  # once only
    with tracker:
        x.mul_(3)  # in place: nothing new
        y = x.clone()
    assert tracker.peak == 2 * 1024 and tracker.current == 2 * 1024
    del y
    assert tracker.current == 1024


def test_breakdown_of_a_training_step():
    lin = torch.nn.Linear(100, 10)  # 1010 params: 4040 B
    opt = torch.optim.AdamW(lin.parameters())
    x = torch.randn(32, 100)
    tracker = MemoryTracker()
    tracker.track_module(lin)
    tracker.track(x)
    with tracker:
        lin(x).square().mean().backward()
        opt.step()
    from fptplus.memtrack import optimizer_tensors

    bd = tracker.breakdown(list(lin.parameters()), [p.grad for p in lin.parameters()], optimizer_tensors(opt))
    assert bd.weights == 4040 and bd.gradients == 4040 and bd.optimizer == 2 * 4040 + 2 * 4
    assert bd.peak == bd.weights + bd.gradients + bd.optimizer + bd.activations


@pytest.mark.parametrize("method", ["full_ft", "lora", "fpt_plus"])
@pytest.mark.parametrize("attention", ["eager", "fused"])
def test_meta_accounting_agrees_with_the_cpu_allocator(method, attention):
    """The meta accounting of a steady-state step vs the CPU allocator's own events in a real second step (±10 %)."""
    m = get_method(method)
    kw = dict(backbone="vit_small_patch16_224", img_size=128, num_classes=2, backbone_kwargs={"depth": 2})
    if issubclass(m.config_cls, FPTConfig):
        kw.update(side_img_size=64, side_depth=2)
    cfg = m.make_config(**kw)
    source = "online"
    row = measure_step(method, cfg, 8, "meta", attention, source)
    model = m.build(cfg, device="meta", source=source)
    batch = make_batch(method, model, cfg, 8, "meta", source)
    batch_bytes = sum(t.untyped_storage().nbytes() for t in batch.values())
    meta_step = row.breakdown.peak - row.breakdown.weights - row.breakdown.optimizer - batch_bytes
    cpu_step = cpu_allocator_peak(method, cfg, 8, attention, source)
    assert cpu_step > 1_000_000
    assert abs(meta_step - cpu_step) <= 0.10 * cpu_step, (meta_step, cpu_step)


def test_the_steady_state_step_carries_the_optimizer_state():
    """AdamW keeps two fp32 moments per trainable parameter (+ a step counter each) from the first step on."""
    cfg = get_method("full_ft").make_config(backbone="vit_small_patch16_224", img_size=64, num_classes=2,
                                           backbone_kwargs={"depth": 2})  # fmt: skip
    row = measure_step("full_ft", cfg, 4, "meta", "fused", "online")
    model = get_method("full_ft").build(cfg, device="meta")
    params = [p for p in model.parameters() if p.requires_grad]
    moments = 2 * sum(p.numel() * 4 for p in params)
    assert moments <= row.breakdown.optimizer <= moments + 64 * len(params)
    assert row.breakdown.gradients > 0.5 * sum(p.numel() * 4 for p in params)  # grads alive during backward
