"""ONNX export of a trained run: the whole model as deployed (for FPT+: the frozen LPM up to its deepest fused
layer, the token selection, the fusion modules and the side network), checked against PyTorch in onnxruntime.

    inputs  the method's evaluation views, normalised (FPT/FPT+: side (B, 3, h, w) and lpm (B, 3, H, W); the other
            methods: image (B, 3, H, W)); the batch dimension is dynamic
    output  logits (B, C)

The sidecar MODEL.json records the classes, each input's size, mean/std and resize rule, and the parity measured.
Needs the optional packages onnx, onnxscript and onnxruntime (`pip install 'fptplus[onnx]'`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, RunError
from ..lpm import FrozenLPM
from ..methods import get_method
from .evaluate import load_trained, resolve_run


@dataclass
class ExportReport:
    path: str
    inputs: dict[str, list[int]]  # per-sample shapes (the batch dimension is dynamic)
    max_abs_logit_diff: float  # onnxruntime vs PyTorch on random inputs of another batch size than traced
    torch_img_per_s: float
    onnxruntime_img_per_s: float


class _Exported(nn.Module):
    """The model called with its evaluation inputs as positional tensors (what an ONNX graph takes)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: Tensor) -> Tensor:
        args, kwargs = self.model.batch_args(dict(zip(self.names, tensors, strict=True)))
        return self.model(*args, **kwargs)  # (B, C) logits


def _onnx_modules():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"ONNX export needs the packages onnx, onnxscript and onnxruntime ({err}); install them with "
            "`pip install 'fptplus[onnx]'`"
        ) from err
    return onnxruntime


def _timed(fn, repeats: int = 2) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def export_onnx(
    run: str | Path,
    out: str | Path,
    checkpoint: str = "best",
    seed: int | None = None,
    tolerance: float = 1e-4,
    overwrite: bool = False,
    check_batch: int = 3,
) -> ExportReport:
    """Exports a run's model to ONNX and checks it in onnxruntime (refused, nothing written, above `tolerance`).

    Args:
        run: run folder (the --out of `fptplus train`); seed: which seed of a multi-seed run.
        out: the .onnx file (its sidecar OUT.json is written next to it).
        tolerance: the largest |logit difference| accepted between onnxruntime and PyTorch.
        check_batch: batch size of the parity check (differs from the traced batch of 2: proves the dynamic batch).
    """
    ort = _onnx_modules()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out must name a .onnx file, got {out}")
    sidecar = out.with_suffix(".json")
    if (out.exists() or sidecar.exists()) and not overwrite:
        raise ConfigError(f"{out} (or {sidecar.name}) exists; pass --overwrite to replace it, or another --out")
    from .runfolder import check_output_file

    check_output_file(out, overwrite)
    check_output_file(sidecar, overwrite, "--out (its .json sidecar)")
    _, run_dir = resolve_run(run, seed)
    cfg, model, classes = load_trained(run_dir, checkpoint, "online")
    method = get_method(cfg.method)
    for m in model.modules():  # the fused importance kernel shares SDPA calls at run time; ONNX gets the chunked one
        if isinstance(m, FrozenLPM):
            m.importance_kernel = "chunked"
    example = method.inputs.example_batch(model, cfg.model, 2, "cpu", "online")
    example.pop("label", None)
    names = list(example)
    wrapper = _Exported(model, names).eval()
    batch = torch.export.Dim("batch", min=1)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper, tuple(example[n] for n in names), tmp, dynamo=True, input_names=names,
                output_names=["logits"], dynamic_shapes=(tuple({0: batch} for _ in names),), verbose=False,
                external_data=False,
            )  # fmt: skip
        g = torch.Generator().manual_seed(0)
        check = {n: torch.randn(check_batch, *t.shape[1:], generator=g) for n, t in example.items()}
        with torch.no_grad():
            want = wrapper(*(check[n] for n in names)).float().numpy()
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        feeds = {n: check[n].numpy() for n in names}
        got = session.run(["logits"], feeds)[0]
        diff = float(np.abs(got - want).max())
        if not diff <= tolerance:
            raise RunError(
                f"the ONNX graph of {run_dir} differs from PyTorch by {diff:.3g} in the logits (tolerance "
                f"{tolerance:g}); nothing was written. Report this with the run's config.yaml."
            )
        with torch.no_grad():
            t_torch = _timed(lambda: wrapper(*(check[n] for n in names)))
        t_ort = _timed(lambda: session.run(["logits"], feeds))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    report = ExportReport(str(out), {n: list(t.shape[1:]) for n, t in example.items()}, diff,
                          check_batch / t_torch, check_batch / t_ort)  # fmt: skip
    sidecar.write_text(json.dumps(_sidecar(cfg, model, classes, names, run_dir, checkpoint, report), indent=2))
    return report


def _sidecar(cfg, model, classes, names, run_dir: Path, checkpoint: str, report: ExportReport) -> dict[str, Any]:
    spec = model.spec
    return {
        "format": "fptplus-onnx/1",
        "run": str(run_dir),
        "checkpoint": checkpoint,
        "method": cfg.method,
        "backbone": cfg.model.backbone,
        "classes": classes,
        "inputs": {
            n: {
                "shape": ["batch", *report.inputs[n]],
                "mean": list(spec.mean),
                "std": list(spec.std),
                # with --crop foreground: cut to the content's box (fptplus.data.crop), then pad (aspect kept)
                "crop": cfg.data.crop,
                "resize": "pad" if cfg.data.crop == "foreground" else cfg.data.resize,
            }
            for n in names
        },
        "output": {
            "name": "logits",
            "shape": ["batch", len(classes or [])],
            "probabilities": "sigmoid(logits), one per label" if cfg.data.label_columns else "softmax(logits)",
        },
        "parity": asdict(report),
    }
