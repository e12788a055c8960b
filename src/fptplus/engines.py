"""Which engine runs the frozen model's pass (the preload's forward): PyTorch (the default), or the same computation
exported once to an ONNX graph and run by onnxruntime (opt-in: `--engine onnxruntime|auto`).

Measured (`benchmarks/README.md`, issue 29): onnxruntime was 1.28× PyTorch's preload pass for ViT-B at 512 px,
batch 4, but on the ISIC 672 px preload (ViT-S/14, 2,305 tokens, batch 16, 1 thread) it ran at half PyTorch's speed
(0.1 vs 0.2 img/s) in 15 GB of memory instead of 1.6 GB (its graph keeps the traced attention maps of every
chunk), so larger inputs would not fit a 24 GB machine. Hence torch by default.

    torch         `FrozenLPM` itself (the reference)
    onnxruntime   the capture graph — the LPM to its deepest fused layer, the selector's scores, top-k, gather, the
                  pooled features — exported with torch's exporter and cached in `files.cache_dir()/engines/` under
                  a key of everything that shapes it (backbone, weights' hash, resolution, layers, ratio, selector,
                  torch and onnxruntime versions); verified against PyTorch on the first real batch it sees (token
                  sets, K/V, pooled features) before it writes anything, the verdict kept next to the graph
    auto          onnxruntime on a CPU when it is installed and its graph verified, else torch (said in the log);
                  $FPTPLUS_ENGINE overrides what auto means

The engine never enters a store's fingerprint: both write the same numbers up to float rounding, so a store written
by either serves the same training, and a preload may be resumed with the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigError
from .files import cache_dir, write_json_atomic
from .lpm import FrozenLPM, LPMFeatures

ENGINES = ("auto", "torch", "onnxruntime")
ENGINE_ENV = "FPTPLUS_ENGINE"  # overrides what "auto" means
OUTPUTS = ("keys", "values", "indices", "scores", "cls", "patch_mean")
MIN_TOKEN_AGREEMENT = 0.999  # selected tokens equal to PyTorch's (fp32 sums in another order may swap a near-tie)
KV_TOLERANCE = 1e-3  # max |difference| of the kept K/V relative to their largest value (float16 stores round at 1e-3)


class _Capture(nn.Module):
    """The LPM pass with plain tensor outputs (what the exporter traces)."""

    def __init__(self, lpm: FrozenLPM) -> None:
        super().__init__()
        self.lpm = lpm

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        f = self.lpm(x)
        return tuple(getattr(f, name) for name in self.names())

    def names(self) -> tuple[str, ...]:
        probe = {"scores": not self.lpm.selector.keeps_all, "cls": self.lpm.provides_pooled,
                 "patch_mean": self.lpm.provides_pooled}  # fmt: skip
        return tuple(n for n in OUTPUTS if probe.get(n, True))


def graph_key(lpm: FrozenLPM, weights: dict[str, str], backbone_kwargs: dict[str, Any]) -> str:
    """Everything that shapes the exported graph (and its numbers)."""
    import onnxruntime

    record = {"backbone": lpm.spec.name, "kwargs": sorted(backbone_kwargs.items()), "weights": weights,
              "size": list(lpm.spec.img_size), "layers": list(lpm.layers), "ratio": lpm.token_ratio,
              "selector": lpm.selector.name, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
              "format": 1}  # fmt: skip
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]


class TorchEngine:
    name = "torch"

    def __init__(self, lpm: FrozenLPM) -> None:
        self.lpm = lpm

    def __call__(self, x: Tensor) -> LPMFeatures:
        return self.lpm(x)


class OnnxEngine:
    """The capture graph in onnxruntime (exported on first use, cached, verified on the first real batch)."""

    name = "onnxruntime"

    def __init__(self, lpm: FrozenLPM, key: str, threads: int | None = None,
                 log: Callable[[str], None] = print) -> None:  # fmt: skip
        import onnxruntime as ort

        self.lpm, self.log = lpm, log
        folder = cache_dir() / "engines"
        self.path, self.record = folder / f"{key}.onnx", folder / f"{key}.json"
        self.names = _Capture(lpm).names()
        if not self.path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            self._export()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.verified = self._verdict() is True

    def _export(self) -> None:
        t0 = time.perf_counter()
        capture = _Capture(self.lpm).eval()
        kernel, self.lpm.importance_kernel = self.lpm.importance_kernel, "chunked"  # the traced graph: chunked
        h, w = self.lpm.spec.img_size
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with torch.no_grad():
                torch.onnx.export(capture, (torch.randn(2, 3, h, w),), tmp, dynamo=True, input_names=["x"],
                                  output_names=list(self.names), dynamic_shapes=({0: torch.export.Dim("batch")},),
                                  verbose=False, external_data=False)  # fmt: skip
            os.replace(tmp, self.path)
        finally:
            self.lpm.importance_kernel = kernel
            tmp.unlink(missing_ok=True)
        self.log(f"engine: exported the frozen model's pass to {self.path} ({time.perf_counter() - t0:.0f} s, once)")

    def _verdict(self) -> bool | None:
        try:
            return json.loads(self.record.read_text()).get("verified")
        except (OSError, ValueError):
            return None

    def verify(self, x: Tensor) -> list[str]:
        """Compares the graph with PyTorch on a batch; records the verdict; returns the problems (none: verified)."""
        with torch.no_grad():
            want = self.lpm(x)
        got = self._run(x)
        problems = []
        order_a, order_b = want.indices.argsort(-1), got.indices.argsort(-1)  # align each row by token position
        ia, ib = want.indices.gather(-1, order_a), got.indices.gather(-1, order_b)  # (B, L, H, k) sorted
        same = (ia == ib).float().mean().item()
        if same < MIN_TOKEN_AGREEMENT:
            problems.append(f"selected tokens agree on {100 * same:.2f} % (< {100 * MIN_TOKEN_AGREEMENT:g} %)")
        rows = (ia == ib).all(-1)  # (B, L, H): the rows that kept the same set (near-ties may swap a token)
        for name, order in (("keys", (order_a, order_b)), ("values", (order_a, order_b))):
            a = getattr(want, name).gather(3, order[0][..., None].expand_as(getattr(want, name)))[rows]
            b = getattr(got, name).gather(3, order[1][..., None].expand_as(getattr(got, name)))[rows]
            err = ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item() if a.numel() else 0.0
            if not err <= KV_TOLERANCE:
                problems.append(f"{name} differ by {err:.2e} of their largest value (> {KV_TOLERANCE:g})")
        for name in ("cls", "patch_mean"):
            a, b = getattr(want, name), getattr(got, name)
            if a is not None:
                err = ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
                if not err <= KV_TOLERANCE:
                    problems.append(f"{name} differ by {err:.2e} of their largest value (> {KV_TOLERANCE:g})")
        write_json_atomic(self.record, {"verified": not problems, "problems": problems, "token_agreement": same,
                                        "batch": int(x.shape[0])})  # fmt: skip
        self.verified = not problems
        return problems

    def _run(self, x: Tensor) -> LPMFeatures:
        outs = dict(zip(self.names, self.session.run(list(self.names), {"x": x.cpu().numpy()}), strict=True))
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in outs.items()}
        return LPMFeatures(t["keys"], t["values"], t["indices"].long(), t.get("cls"), patch_mean=t.get("patch_mean"),
                           scores=t.get("scores"))  # fmt: skip

    def __call__(self, x: Tensor) -> LPMFeatures:
        return self._run(x)


def make_engine(name: str, lpm: FrozenLPM, device: torch.device, weights: dict[str, str],
                backbone_kwargs: dict[str, Any], log: Callable[[str], None]):  # fmt: skip
    """The engine to use (see the module docstring); `auto` never fails: it falls back to torch and says why."""
    if name not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {name!r}")
    if name == "auto" and os.environ.get(ENGINE_ENV) in ENGINES:  # a machine-wide choice (the test suite: torch)
        name = os.environ[ENGINE_ENV]
    if name == "torch" or (name == "auto" and device.type != "cpu"):
        return TorchEngine(lpm)
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        if name == "onnxruntime":
            raise ConfigError(f"--engine onnxruntime needs onnxruntime and onnxscript ({err}): "
                              "pip install 'fptplus[onnx]'") from None  # fmt: skip
        log("engine: torch (onnxruntime is not installed: `pip install 'fptplus[onnx]'` makes CPU preloads faster)")
        return TorchEngine(lpm)
    try:
        engine = OnnxEngine(lpm, graph_key(lpm, weights, backbone_kwargs), log=log)
    except Exception as err:
        if name == "onnxruntime":
            raise ConfigError(f"--engine onnxruntime: the frozen model's pass could not be exported ({err})") from None
        log(f"engine: torch (the frozen model's pass could not be exported to onnxruntime: {type(err).__name__})")
        return TorchEngine(lpm)
    if engine._verdict() is False:
        if name == "onnxruntime":
            raise ConfigError(f"--engine onnxruntime: its graph ({engine.path}) disagreed with PyTorch earlier "
                              f"({json.loads(engine.record.read_text())['problems']}); use --engine torch")  # fmt: skip
        log("engine: torch (the onnxruntime graph disagreed with PyTorch when it was verified)")
        return TorchEngine(lpm)
    return engine


def first_batch_check(engine, x: Tensor, auto: bool, log: Callable[[str], None]):
    """Verifies an unverified onnxruntime engine on the first real batch; returns the engine to use for it and the
    rest (torch, with the reason in the log, when it disagrees and the choice was automatic)."""
    if not isinstance(engine, OnnxEngine) or engine.verified:
        return engine
    problems = engine.verify(x)
    if not problems:
        log(f"engine: onnxruntime (verified against PyTorch on {x.shape[0]} images: same tokens, K/V within "
            f"{KV_TOLERANCE:g})")  # fmt: skip
        return engine
    if not auto:
        raise ConfigError(f"--engine onnxruntime disagrees with PyTorch on this data ({'; '.join(problems)}); use "
                          "--engine torch")  # fmt: skip
    log(f"engine: torch (onnxruntime disagreed with PyTorch on the first batch: {'; '.join(problems)})")
    return TorchEngine(engine.lpm)
