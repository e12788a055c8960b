"""Which engine runs the frozen model's pass (the preload's forward, and `predict`'s): PyTorch, or the same
computation exported once to an ONNX graph and run by OpenVINO or onnxruntime (`--engine`).

    torch         `FrozenLPM` itself (the reference)
    openvino      the capture graph — the LPM to its deepest fused layer, the selector's scores, top-k, gather, the
    onnxruntime   pooled features — exported with torch's exporter and cached in `files.cache_dir()/engines/` under
                  a key of everything that shapes it (backbone, weights' hash, resolution, layers, ratio, selector,
                  importance kernel, torch version); compiled by OpenVINO's CPU plugin (fp32 inference precision,
                  never its bf16 default) or loaded by onnxruntime's CPU provider; verified against PyTorch on the
                  first real batch it sees (token sets up to near-ties, `selection_problems`; K/V, pooled features)
                  before it writes anything, the verdict kept next to the graph per runtime and version
    auto          on a CPU: the first of openvino, onnxruntime that is installed, exports and has not disagreed
                  with PyTorch; else torch (said in the log). $FPTPLUS_ENGINE overrides what auto means

The graph uses the "dense" importance kernel (each fused layer's attention map materialised once, read by the
layer's output and by the importance: no second attention pass) when one image's map fits DENSE_MAX_BYTES, and
runs in micro-batches whose maps fit BATCH_MAP_BYTES; else the chunked kernel. Measured (`benchmarks/README.md`,
issue 29; 2-core CPU): OpenVINO preloads 1.34–1.51× faster than PyTorch's preload pass at 512–1024 px (98–115 % of
the bare forward), onnxruntime 1.09–1.13×; peak memory at 1022 px (ViT-S/14, one image) 2.1 GB for OpenVINO with a
model compiled per batch size (9.6 GB with a dynamic batch), 5.4 GB for onnxruntime without its arena, 1.1 GB for
PyTorch.

The engine never enters a store's fingerprint: every engine writes the same numbers up to float rounding, so a store
written by one serves the same training, and a preload may be resumed with another.
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
from .sigstack import kept_signal_stack

ENGINES = ("auto", "torch", "openvino", "onnxruntime")
RUNTIMES = ("openvino", "onnxruntime")  # what auto tries on a CPU, in this order (the faster first, measured)
ENGINE_ENV = "FPTPLUS_ENGINE"  # overrides what "auto" means
DENSE_MAX_BYTES = 1 << 30  # the dense kernel is exported when one image's attention map (H·N² fp32) fits this
BATCH_MAP_BYTES = 512 << 20  # a dense graph runs in micro-batches whose attention maps fit this
OUTPUTS = ("keys", "values", "indices", "scores", "cls", "patch_mean")
KV_TOLERANCE = 1e-3  # max |difference| of the kept K/V relative to their largest value (float16 stores round at 1e-3)
# max |difference| of the selector's scores relative to the score itself (floored at 1e-3 of the row's best): the kept
# scores (sorted), and a token one side kept and the other did not against the other side's boundary (k-th) score — a
# near-tie that float sums in another order may swap (measured at 1120 px, ViT-S/14: 3.2e-5)
SCORE_TOLERANCE = 1e-3
CHECK_VERSION = 2  # verdicts recorded by another version of `verify` are not trusted (they are checked again)


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


def map_bytes(lpm: FrozenLPM) -> int:
    """Bytes of one image's attention map in one layer (H·N² fp32): what the dense kernel materialises."""
    n = lpm.spec.num_tokens
    return lpm.spec.num_heads * n * n * 4


def export_kernel(lpm: FrozenLPM) -> str:
    """The importance kernel of the exported graph: dense when one image's map fits, else chunked."""
    return "dense" if map_bytes(lpm) <= DENSE_MAX_BYTES else "chunked"


def graph_key(lpm: FrozenLPM, weights: dict[str, str], backbone_kwargs: dict[str, Any]) -> str:
    """Everything that shapes the exported graph (and its numbers); the runtime is in the verdict's name."""
    record = {"backbone": lpm.spec.name, "kwargs": sorted(backbone_kwargs.items()), "weights": weights,
              "size": list(lpm.spec.img_size), "layers": list(lpm.layers), "ratio": lpm.token_ratio,
              "selector": lpm.selector.name, "kernel": export_kernel(lpm), "torch": torch.__version__,
              "format": 2}  # fmt: skip
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]


def kept_by_both(a: Tensor, b: Tensor) -> Tensor:
    """(..., k) token indices of two selections -> (..., k) bool: which of a's tokens b kept too (its row)."""
    sb = b.sort(-1).values
    pos = torch.searchsorted(sb, a.contiguous()).clamp(max=sb.shape[-1] - 1)
    return sb.gather(-1, pos) == a


def token_agreement(a: Tensor, b: Tensor) -> float:
    """The share of a's kept tokens that b kept too, row by row (1 swapped token of k costs 1/k of its row; comparing
    the sorted sets position by position would count every position after the swap)."""
    return kept_by_both(a, b).float().mean().item()


def selection_problems(want: LPMFeatures, got: LPMFeatures, tolerance: float | None = None) -> list[str]:
    """How another engine's selection differs from PyTorch's beyond near-ties (empty: none).

    Both keep k tokens per (image, layer, head) row, best first, with the selector's scores. They agree when the
    kept scores match within `tolerance` of themselves and every token one side kept and the other did not scores
    (on the side that kept it) within that tolerance of the other side's k-th score: a swap at the boundary between
    near-equal scores (identical black letterbox patches make many), not a different ranking. Scores below 1e-3 of
    the row's best are compared at that floor.
    """
    if want.scores is None or got.scores is None:  # every token kept: the positions alone decide
        return [] if torch.equal(want.indices, got.indices) else ["the kept token positions differ"]
    limit = SCORE_TOLERANCE if tolerance is None else tolerance
    floor = 1e-3 * want.scores[..., :1].abs()  # (B, L, H, 1)

    def off(x: Tensor, ref: Tensor) -> Tensor:  # |x - ref| in units of the tolerance at ref
        return (x - ref).abs() / (limit * torch.maximum(ref.abs(), floor)).clamp_min(1e-30)

    problems = []
    worst = off(got.scores, want.scores).amax().item()  # (B, L, H, k) sorted descending on both
    if not worst <= 1:
        problems.append(f"the kept tokens' scores differ by up to {worst * limit:.2e} of themselves (> {limit:g})")
    far = 0
    for a, b in ((want, got), (got, want)):  # tokens a kept that b did not, against b's boundary score
        only_a = ~kept_by_both(a.indices, b.indices)  # (B, L, H, k)
        far += int((only_a & (off(a.scores, b.scores[..., -1:]) > 1)).sum())
    if far:
        same = token_agreement(want.indices, got.indices)
        problems.append(
            f"selected tokens agree on {100 * same:.2f} %, and {far} of the others are not near-ties "
            f"(their score is further than {limit:g} from the other side's k-th)"
        )
    return problems


class TorchEngine:
    name = "torch"

    def __init__(self, lpm: FrozenLPM) -> None:
        self.lpm = lpm

    def __call__(self, x: Tensor) -> LPMFeatures:
        return self.lpm(x)

    def set_threads(self, threads: int) -> None:
        """torch's intra-op pool is the process's (`torch.set_num_threads`)."""
        torch.set_num_threads(threads)


class OnnxEngine:
    """The capture graph in onnxruntime (exported on first use, cached, verified on the first real batch)."""

    name = "onnxruntime"

    def __init__(self, lpm: FrozenLPM, key: str, threads: int | None = None,
                 log: Callable[[str], None] = print) -> None:  # fmt: skip
        self.lpm, self.log = lpm, log
        folder = cache_dir() / "engines"
        self.path = folder / f"{key}.onnx"
        self.record = folder / f"{key}.{self.name}-{self.version()}.json"  # the verdict of this runtime
        self.names = _Capture(lpm).names()
        self.kernel = export_kernel(lpm)
        # micro-batches: a dense graph's maps of one call stay within BATCH_MAP_BYTES
        self.micro = max(1, BATCH_MAP_BYTES // map_bytes(lpm)) if self.kernel == "dense" else None
        if not self.path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            self._export()
        self._load(threads or torch.get_num_threads())
        self.verified = self._verdict() is True

    @staticmethod
    def version() -> str:
        import onnxruntime

        return onnxruntime.__version__

    def _load(self, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.enable_cpu_mem_arena = False  # measured at 1022 px, one image: 5.4 GB peak instead of 10.1 GB
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(self.names), {"x": x})

    def set_threads(self, threads: int) -> None:
        """Runs on `threads` threads from the next call (the session is reloaded; the graph stays cached)."""
        self._load(threads)

    def _export(self) -> None:
        t0 = time.perf_counter()
        capture = _Capture(self.lpm).eval()
        kernel, self.lpm.importance_kernel = self.lpm.importance_kernel, self.kernel  # the traced graph's kernel
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
        self.log(f"engine: exported the frozen model's pass ({self.kernel} importance kernel) to {self.path} "
                 f"({time.perf_counter() - t0:.0f} s, once)")  # fmt: skip

    def _verdict(self) -> bool | None:
        """The recorded verdict of this graph and runtime (None: none yet, or one by another version of `verify`)."""
        try:
            record = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        return record.get("verified") if record.get("check") == CHECK_VERSION else None

    def verify(self, x: Tensor) -> list[str]:
        """Compares the graph with PyTorch on a batch; records the verdict; returns the problems (none: verified)."""
        with torch.no_grad():
            want = self.lpm(x)
        got = self._run(x)
        order_a, order_b = want.indices.argsort(-1), got.indices.argsort(-1)  # align each row by token position
        ia, ib = want.indices.gather(-1, order_a), got.indices.gather(-1, order_b)  # (B, L, H, k) sorted
        same = token_agreement(want.indices, got.indices)
        problems = selection_problems(want, got)
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
                                        "check": CHECK_VERSION,
                                        "batch": int(x.shape[0]), "runtime": f"{self.name} {self.version()}",
                                        "kernel": self.kernel})  # fmt: skip
        self.verified, self.token_agreement = not problems, same
        return problems

    def _run(self, x: Tensor) -> LPMFeatures:
        arr = x.detach().cpu().float().numpy()
        calls = -(-len(arr) // (self.micro or len(arr)))  # as few calls as the budget allows, of even sizes
        parts = [self._infer(np.ascontiguousarray(a)) for a in np.array_split(arr, calls)]
        outs = {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(self.names)}  # batch-first outputs
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in outs.items()}
        return LPMFeatures(t["keys"], t["values"], t["indices"].long(), t.get("cls"), patch_mean=t.get("patch_mean"),
                           scores=t.get("scores"))  # fmt: skip

    def __call__(self, x: Tensor) -> LPMFeatures:
        return self._run(x)


class OpenVinoEngine(OnnxEngine):
    """The same capture graph compiled by OpenVINO's CPU plugin at fp32 inference precision."""

    name = "openvino"

    @staticmethod
    def version() -> str:
        import openvino

        return openvino.__version__.split("-")[0]

    def _load(self, threads: int) -> None:
        import openvino

        with kept_signal_stack():  # every OpenVINO call: it replaces the thread's signal stack (`fptplus.sigstack`)
            self.core = openvino.Core()
        # fp32 throughout: on CPUs with bf16 units OpenVINO would otherwise infer in bf16 (other tokens, other K/V)
        self.config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        self.compiled: dict[int, tuple[Any, list[Any]]] = {}  # batch size -> (infer request, outputs by name)

    def set_threads(self, threads: int) -> None:
        """Runs on `threads` threads from the next call (models are compiled again as batch sizes come)."""
        with kept_signal_stack():
            self.compiled.clear()
        self.config["INFERENCE_NUM_THREADS"] = threads

    def _request(self, batch: int) -> tuple[Any, list[Any]]:
        """A model compiled for this batch size: static shapes let OpenVINO plan and reuse its buffers (measured
        at 1022 px, ViT-S/14, one image: 2.1 GB peak instead of 9.6 GB with a dynamic batch, and faster)."""
        if batch not in self.compiled:
            with kept_signal_stack():
                if len(self.compiled) >= 3:  # the full micro-batch, its remainder, a last short batch
                    self.compiled.pop(next(iter(self.compiled)))
                model = self.core.read_model(str(self.path))
                model.reshape({"x": [batch, 3, *self.lpm.spec.img_size]})
                compiled = self.core.compile_model(model, "CPU", self.config)
                by_name = {o.get_any_name(): o for o in compiled.outputs}
                self.compiled[batch] = (compiled.create_infer_request(), [by_name[n] for n in self.names])
        return self.compiled[batch]

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        request, outputs = self._request(len(x))
        with kept_signal_stack():
            result = request.infer({"x": x})
            return [np.array(result[o]) for o in outputs]  # copies: the request reuses its buffers

    def close(self) -> None:
        """Releases the compiled models now, keeping this thread's signal stack (collection would not)."""
        with kept_signal_stack():
            self.compiled.clear()
            self.core = None

    def __del__(self) -> None:
        try:
            if getattr(self, "compiled", None) is not None:
                self.close()
        except Exception:  # interpreter shutdown: nothing left to keep
            pass


_CLASSES = {"onnxruntime": OnnxEngine, "openvino": OpenVinoEngine}
_NEEDS = {"onnxruntime": ("onnxruntime", "onnxscript"), "openvino": ("openvino", "onnxscript")}
_EXTRA = {"onnxruntime": "onnx", "openvino": "openvino"}


def _missing(runtime: str) -> str | None:
    """The first module a runtime needs that is not installed, or None."""
    import importlib.util

    return next((m for m in _NEEDS[runtime] if importlib.util.find_spec(m) is None), None)


def make_engine(name: str, lpm: FrozenLPM, device: torch.device, weights: dict[str, str],
                backbone_kwargs: dict[str, Any], log: Callable[[str], None]):  # fmt: skip
    """The engine to use (see the module docstring); `auto` never fails: it falls back to torch and says why."""
    if name not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {name!r}")
    if name == "auto" and os.environ.get(ENGINE_ENV) in ENGINES:  # a machine-wide choice (the test suite: torch)
        name = os.environ[ENGINE_ENV]
    if name == "torch" or (name == "auto" and device.type != "cpu"):
        return TorchEngine(lpm)
    reasons = []
    for runtime in RUNTIMES if name == "auto" else (name,):
        missing = _missing(runtime)
        if missing:
            if name != "auto":
                raise ConfigError(f"--engine {runtime} needs {' and '.join(_NEEDS[runtime])} ({missing} is not "
                                  f"installed): pip install 'fptplus[{_EXTRA[runtime]}]'")  # fmt: skip
            reasons.append(f"{runtime} is not installed")
            continue
        try:
            engine = _CLASSES[runtime](lpm, graph_key(lpm, weights, backbone_kwargs), log=log)
        except Exception as err:
            if name != "auto":
                raise ConfigError(f"--engine {runtime}: the frozen model's pass could not be exported or loaded "
                                  f"({err})") from None  # fmt: skip
            reasons.append(f"{runtime} could not export or load the frozen model's pass: {type(err).__name__}")
            continue
        if engine._verdict() is False:
            if name != "auto":
                problems = json.loads(engine.record.read_text())["problems"]
                raise ConfigError(f"--engine {runtime}: its graph ({engine.path}) disagreed with PyTorch earlier "
                                  f"({problems}); use --engine torch")  # fmt: skip
            reasons.append(f"the {runtime} graph disagreed with PyTorch when it was verified")
            continue
        return engine
    log(f"engine: torch ({'; '.join(reasons)}; `pip install 'fptplus[openvino]'` makes CPU preloads faster)")
    return TorchEngine(lpm)


def first_batch_check(engine, x: Tensor, auto: bool, log: Callable[[str], None]):
    """Verifies an unverified exported engine on the first real batch; returns the engine to use for it and the
    rest (torch, with the reason in the log, when it disagrees and the choice was automatic)."""
    if not isinstance(engine, OnnxEngine) or engine.verified:
        return engine
    problems = engine.verify(x)
    if not problems:
        same = engine.token_agreement
        tokens = "same tokens" if same == 1 else f"{100 * same:.2f} % of the tokens the same, the rest near-ties"
        log(f"engine: {engine.name} (verified against PyTorch on {x.shape[0]} images: {tokens}, K/V within "
            f"{KV_TOLERANCE:g})")  # fmt: skip
        return engine
    if not auto:
        raise ConfigError(f"--engine {engine.name} disagrees with PyTorch on this data ({'; '.join(problems)}); use "
                          "--engine torch")  # fmt: skip
    log(f"engine: torch ({engine.name} disagreed with PyTorch on the first batch: {'; '.join(problems)})")
    return TorchEngine(engine.lpm)
